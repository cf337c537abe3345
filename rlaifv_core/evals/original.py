"""Files of the user's checkout of the original RLAIF-V repository, read for `eval.protocol: rlaifv`.

    from rlaifv_core.evals.original import original_file, read_template, judge_comparability
    path = original_file(config.eval.data, "coco_synonyms")       # <rlaifv_repo>/eval/data/synonyms_refine.txt
    tpl = read_template(original_file(data, "mmhal_judge_prompt"), "mmhal_judge_prompt")
    tpl.fill(image_content="Dog, Lawn", question=..., gt_answer=..., answer=...); tpl.sha256

The project ships none of the original's files (synonym list, prompt templates): each is found under
`eval.data.rlaifv_repo` at the path the original uses (`ORIGINAL_FILES`), or at the path its own
`eval.data.<key>` names. A template is a plain text file with named `{placeholders}` or the
original's .py file itself, from which the module-level string (or the f-string a function builds)
is read with `ast`, never executed. A missing file is a FileNotFoundError naming the key and path.
"""

from __future__ import annotations

import ast
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..eval_data import ORIGINAL_FILES  # eval.data key -> where the original repository keeps the file

# key -> (module-level variable, or (function, variable) of an f-string; the original's argument names ->
# this project's placeholder names)
_PY_SOURCES = {
    "objhal_extraction_prompt": ("prompt_template", {}),
    "mmhal_judge_prompt": ("template", {}),
    "refomb_judge_prompt": (("construct_gpt4_query", "prompt"),
                            {"image_descriptsion": "description", "text_instruction": "question",
                             "modelA_answer": "answer_a", "modelB_answer": "answer_b"}),
    "refomb_review_prompt": (("construct_gpt4_query", "prompt"), {"review_text": "review"}),
}

#: The judges the original used (all retired by their provider): benchmark -> model.
ORIGINAL_JUDGES = {"object_halbench": "gpt-3.5-turbo-0613", "mmhal": "gpt-4-0314", "refomb": "gpt-4-1106-preview"}


def original_file(data, key: str) -> Path:
    """The path of one original file: `eval.data.<key>` if set, else `<rlaifv_repo>/<ORIGINAL_FILES[key]>`."""
    explicit = getattr(data, key, None)
    repo = getattr(data, "rlaifv_repo", None)
    if explicit:
        path, how = Path(explicit), f"eval.data.{key}"
    elif repo:
        path, how = Path(repo) / ORIGINAL_FILES[key], f"eval.data.rlaifv_repo ({repo}) + {ORIGINAL_FILES[key]}"
    else:
        raise ValueError(f"protocol rlaifv needs the original's {ORIGINAL_FILES[key]}: set eval.data.rlaifv_repo to "
                         f"your checkout of the RLAIF-V repository, or eval.data.{key} to the file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (from {how}); protocol rlaifv reads the original's "
                                f"{Path(ORIGINAL_FILES[key]).name} from your checkout of RLAIF-V")
    return path


@dataclass(frozen=True)
class Template:
    """A prompt template: its text, where it came from, and the sha256 of the text."""

    text: str
    source: str
    fields: tuple[str, ...] = ()  # the placeholders, in order (positional `{}` templates: empty)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def fill(self, **values: str) -> str:
        """Placeholders replaced by values: positional `{}` templates (the original MMHal one) with
        `str.format` in the order given, named ones by plain replacement (braces elsewhere kept)."""
        if "{}" in self.text:
            return self.text.format(*values.values())
        out = self.text
        for name, value in values.items():
            out = out.replace("{" + name + "}", str(value))
        return out


def _joined_to_template(node: ast.JoinedStr, constants: dict[str, str], rename: dict[str, str]) -> str:
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value))
        elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
            name = value.value.id
            parts.append(constants[name] if name in constants else "{" + rename.get(name, name) + "}")
        else:
            raise ValueError(f"unsupported f-string part {ast.unparse(value)!r}")
    return "".join(parts)


def _from_python(path: Path, key: str) -> tuple[str, tuple[str, ...]]:
    target, rename = _PY_SOURCES[key]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    constants[t.id] = node.value.value
    if isinstance(target, str):
        if target not in constants:
            raise ValueError(f"{path}: no module-level string {target!r} (the original's prompt for {key})")
        return constants[target], ()
    function, variable = target
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for stmt in ast.walk(node):
                if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.JoinedStr)
                        and any(isinstance(t, ast.Name) and t.id == variable for t in stmt.targets)):
                    return _joined_to_template(stmt.value, constants, rename), tuple(rename.values())
    raise ValueError(f"{path}: no f-string {variable!r} in a function {function!r} (the original's prompt for {key})")


def read_template(path: str | Path, key: str) -> Template:
    """The template of `key` (see ORIGINAL_FILES) from a text file or the original's .py file."""
    path = Path(path)
    if path.suffix == ".py":
        text, fields = _from_python(path, key)
    else:
        text, fields = path.read_text(encoding="utf-8"), ()
    return Template(text, str(path), fields)


def judge_comparability(benchmark: str, judge_identity: dict | None) -> str:
    """'exact judge' when the original's judge model answered, else a warning (issued once per call) that
    scores are comparable with published numbers only approximately."""
    original = ORIGINAL_JUDGES[benchmark]
    requested = (judge_identity or {}).get("model_requested")
    if requested == original:
        return f"the original judge {original}"
    note = (f"protocol rlaifv, {benchmark}: the original judge {original} is retired; scores with "
            f"{requested or 'no LLM judge'} are comparable with published numbers only approximately")
    warnings.warn(note, stacklevel=2)
    return note
