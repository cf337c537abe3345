"""The plug-in registries: the shapes world arrives through its entry point, a user's plug-in through
RLAIFV_PLUGINS, and an unknown name is an error that says what is known and how to add one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlaifv_core import plugins
from rlaifv_core.models import resolve_model_path

ROOT = Path(__file__).resolve().parent.parent


def test_the_shapes_world_registers_everything_it_adds_through_its_entry_point():
    assert "shapes" in plugins.model_schemes.names()
    assert "oracle" in plugins.backends.names()
    assert "shapes" in plugins.prompt_sources.names()
    assert "shapes" in plugins.benchmarks.names()
    assert "minimal_edit_anchor" in plugins.pair_builders.names()
    assert "shapes" in plugins.truth_metrics.names()


def test_an_unknown_scheme_is_an_error_naming_the_known_ones_and_plain_names_pass_through(tmp_path):
    with pytest.raises(plugins.UnknownName, match=r"unknown model-name scheme 'nosuch'.*known: shapes.*RLAIFV_PLUGINS"):
        resolve_model_path("nosuch:model")
    assert resolve_model_path("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"
    assert resolve_model_path("s3://bucket/model") == "s3://bucket/model"
    odd = tmp_path / "weird:name"
    odd.mkdir()
    assert resolve_model_path(str(odd)) == str(odd)  # an existing folder is never a scheme


def test_a_name_registered_twice_with_another_value_is_refused():
    registry = plugins.Registry("thing")
    registry.register("a", len)
    registry.register("a", len)  # the same object again (a plug-in loaded twice) is fine
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        registry.register("a", print)


def test_a_users_plugin_named_in_the_environment_adds_a_benchmark(tmp_path):
    (tmp_path / "my_plugin.py").write_text(textwrap.dedent("""
        from rlaifv_core import plugins

        def run(backend, eval_config, settings):
            return {"benchmark": "echo", "metrics": {"answers": float(eval_config.shapes_scenes)}, "n": 0}

        def register():
            plugins.benchmarks.register("echo", run)
    """))
    script = textwrap.dedent("""
        import json
        from rlaifv_core.config import EvalConfig
        from rlaifv_core.evals.registry import run_benchmark
        print(json.dumps(run_benchmark("echo", None, EvalConfig(shapes_scenes=7))))
    """)
    env = dict(os.environ, RLAIFV_PLUGINS="my_plugin:register",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["metrics"] == {"answers": 7.0}


def test_a_plugin_that_fails_to_register_names_itself(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("def register():\n    raise RuntimeError('no GPU here')\n")
    script = "from rlaifv_core import plugins; plugins.benchmarks.get('anything')"
    env = dict(os.environ, RLAIFV_PLUGINS="broken_plugin:register",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "plug-in RLAIFV_PLUGINS broken_plugin:register failed to register: no GPU here" in out.stderr
