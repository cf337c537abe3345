"""The 80 COCO-2014 classes and the project's own synonym table (data only; the extractor is coco.py).

    from rlaifv_core.evals.coco_classes import COCO_CLASSES, SYNONYMS
    SYNONYMS["person"][:3]     # ('person', 'persons', 'people')

`SYNONYMS` maps each class (in COCO category order) to its synonyms, canonical name first; regular
plurals are added by the extractor. `IGNORED_PHRASES` contain a synonym but name something else
("toilet paper", "bus stop"): they are matched and dropped under the label `IGNORE`.
"""

from __future__ import annotations

IGNORE = "__ignore__"  # label of phrases that must hide a contained synonym ("toilet paper", "bus stop")

#: The 80 COCO-2014 classes, in the order of their category ids.
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# One line per class: `canonical: synonym, synonym, …`. Written for this project (singulars,
# irregular plurals, common synonyms, multi-word names). Regular plurals are added automatically.
_SYNONYM_TABLE = """
person: person, persons, people, man, men, woman, women, boy, girl, child, children, kid, baby, babies, infant, toddler, teenager, teen, adult, guy, lady, ladies, gentleman, gentlemen, human, individual, someone, somebody, player, skier, surfer, snowboarder, skateboarder, skater, rider, biker, cyclist, bicyclist, motorcyclist, pedestrian, passenger, driver, pilot, chef, baker, worker, officer, policeman, policemen, policewoman, cop, soldier, tourist, spectator, crowd, catcher, batter, umpire, pitcher, mother, father, mom, dad, son, daughter, brother, sister, grandmother, grandfather, grandma, grandpa, wife, husband, bride, groom, friend, student, teacher, doctor, nurse, farmer, fisherman, fishermen, vendor, customer, shopper, athlete, hiker, jockey, cowboy, waiter, waitress, businessman, businessmen, businesswoman, fireman, firemen, firefighter, audience member
bicycle: bicycle, bike, mountain bike, road bike, push bike
car: car, automobile, taxi, cab, taxicab, sedan, suv, jeep, van, minivan, hatchback, police car, sports car, race car
motorcycle: motorcycle, motorbike, motor bike, motor cycle, dirt bike, moped, scooter, motor scooter, vespa
airplane: airplane, aeroplane, plane, air plane, jet, jetliner, airliner, aircraft, passenger jet, jumbo jet, fighter jet, seaplane
bus: bus, buses, busses, school bus, double decker, double decker bus, double-decker, double-decker bus, trolley bus, minibus
train: train, locomotive, tram, trolley, streetcar, street car, subway, subway train, railcar, train car, passenger train, freight train, monorail
truck: truck, lorry, pickup, pickup truck, fire truck, firetruck, semi truck, tow truck, dump truck, garbage truck
boat: boat, ship, sailboat, sail boat, yacht, canoe, kayak, ferry, ferries, rowboat, row boat, speedboat, speed boat, motorboat, barge, fishing boat, cruise ship, tugboat, catamaran, jet ski
traffic light: traffic light, traffic signal, stoplight, stop light, traffic lamp
fire hydrant: fire hydrant, hydrant
stop sign: stop sign
parking meter: parking meter, meter
bench: bench, benches, park bench
bird: bird, pigeon, dove, seagull, gull, duck, goose, geese, swan, parrot, crow, raven, sparrow, eagle, hawk, owl, pelican, heron, flamingo, penguin, hen, rooster, peacock, hummingbird, finch, ostrich, puffin
cat: cat, kitten, kitty, kitties, tabby
dog: dog, puppy, puppies, pup, doggy, doggie, hound, terrier, poodle, bulldog, beagle, labrador, retriever, dachshund, chihuahua, husky, collie, corgi, pug, german shepherd, golden retriever
horse: horse, pony, ponies, foal, colt, stallion, mare
sheep: sheep, lamb, ewe
cow: cow, cattle, calf, calves, bull, ox, oxen, heifer
elephant: elephant
bear: bear, grizzly, grizzly bear, polar bear, black bear, brown bear, bear cub
zebra: zebra
giraffe: giraffe
backpack: backpack, back pack, rucksack, knapsack
umbrella: umbrella, parasol
handbag: handbag, hand bag, purse, pocketbook
tie: tie, necktie, bow tie
suitcase: suitcase, suit case, luggage, baggage
frisbee: frisbee, frisbees, flying disc
skis: skis, ski, pair of skis
snowboard: snowboard, snow board
sports ball: sports ball, ball, soccer ball, tennis ball, football, basketball, volleyball, softball, beach ball, rugby ball, baseball ball
kite: kite
baseball bat: baseball bat, bat
baseball glove: baseball glove, glove, mitt, baseball mitt, catcher's mitt
skateboard: skateboard, skate board
surfboard: surfboard, surf board
tennis racket: tennis racket, racket, racquet, tennis racquet
bottle: bottle, water bottle, beer bottle, wine bottle
wine glass: wine glass, wineglass, glass of wine, champagne glass
cup: cup, mug, teacup, tea cup, coffee cup, coffee mug, paper cup
fork: fork
knife: knife, knives
spoon: spoon
bowl: bowl
banana: banana
apple: apple
sandwich: sandwich, burger, burgers, hamburger, cheeseburger, panini, sub sandwich
orange: orange, tangerine, clementine
broccoli: broccoli
carrot: carrot
hot dog: hot dog, hotdog, frankfurter, corn dog
pizza: pizza, pizza slice, slice of pizza
donut: donut, doughnut
cake: cake, cupcake, cheesecake, birthday cake, wedding cake
chair: chair, armchair, stool, high chair, recliner, folding chair, lawn chair, office chair, rocking chair
couch: couch, sofa, loveseat, loveseats, love seat, futon, settee
potted plant: potted plant, plant, houseplant, house plant, flowerpot, flower pot, pot plant, planter
bed: bed, bunk bed
dining table: dining table, table, desk, coffee table, kitchen table, picnic table, dinner table, end table, side table
toilet: toilet, urinal, commode, toilet bowl, toilet seat
tv: tv, tvs, television, tv screen, television set, flat screen, flatscreen, monitor, computer monitor, computer screen
laptop: laptop, laptop computer, netbook, macbook, computer, desktop computer
mouse: mouse, mice, computer mouse
remote: remote, remote control, controller, game controller, wii remote, wii controller, tv remote
keyboard: keyboard, computer keyboard
cell phone: cell phone, cellphone, phone, mobile phone, smartphone, smartphones, smart phone, iphone, iphones, telephone
microwave: microwave, microwave oven
oven: oven, stove, stovetop, stove top
toaster: toaster, toaster oven
sink: sink
refrigerator: refrigerator, fridge
book: book, novel, textbook, paperback
clock: clock, clock tower, alarm clock, wall clock
vase: vase
scissors: scissors, scissor, pair of scissors, shears
teddy bear: teddy bear, teddy, teddies, teddybear, teddybears, stuffed bear, plush bear, stuffed animal
hair drier: hair drier, hair dryer, hairdryer, blow dryer, blowdryer, blow drier
toothbrush: toothbrush, tooth brush
"""

# Phrases that contain a synonym but name something else (matched, then dropped).
IGNORED_PHRASES = (
    "toilet paper", "bus stop", "bus station", "train station", "train track", "train tracks",
    "railroad track", "railroad tracks", "cable car", "car park", "tv stand", "flower bed",
    "pitcher of", "table tennis", "power plant", "cd player", "dvd player", "record player",
    "mp3 player", "ski slope", "ski lift", "ski resort", "ski pole", "ski poles", "ski jacket",
    "ski boot", "ski boots", "ski goggles", "ski suit", "ski area", "ball cap", "ball game",
    "home plate", "world cup", "phone booth", "baseball cap",
)

def _table_from_text(text: str) -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for line in text.strip().splitlines():
        cls, _, rest = line.partition(":")
        cls = cls.strip()
        entries = [e.strip() for e in rest.split(",") if e.strip()]
        table[cls] = tuple(dict.fromkeys([cls, *entries]))
    return table


#: canonical class -> its synonyms (canonical name first), as written above.
SYNONYMS: dict[str, tuple[str, ...]] = _table_from_text(_SYNONYM_TABLE)
assert tuple(SYNONYMS) == COCO_CLASSES, "synonym table must list the 80 classes in COCO order"
