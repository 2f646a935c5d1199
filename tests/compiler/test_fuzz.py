"""Random configs compile or fail with a clean ConfigError: never any other exception.

A built-in exception reaching the user is a bug (HOUSE_STYLE 8). Inputs mix the real config
vocabulary with interpolation fragments, hostile characters and random text: wild YAML from
random trees, tame configs (a working one with random values at real keys, so that most get
through to rendering), raw text, and command-line overrides.
"""

from __future__ import annotations

import copy
import io
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from oellm.compiler.errors import ConfigError
from oellm.compiler.pipeline import CompiledBundle, CompileRequest, compile_bundle
from tests.compiler.hostile import HOSTILE, bash_syntax_errors

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The vocabulary, as data tables.
# fmt: off
KEYS = [
    "project", "name", "output_dir", "job", "slurm", "sbatch", "srun", "setup", "launcher_cmd",
    "backend", "kind", "megatron", "lr", "train_iters", "data_path", "save", "load", "bash",
    "command", "container", "runtime", "image", "binds", "env", "sweep", "defaults", "vars",
    "stage", "index", "base_values", "grids", "type", "groups", "params", "configs", "filter",
    "template", "use_srun", "array", "log_events", "_self_", "/container", "/backend",
]
DOTTED = [
    "project.name", "project.output_dir", "job.name", "job.chain_repeat", "slurm.sbatch.time",
    "slurm.env.X", "backend.bash.command", "backend.megatron.lr", "backend.megatron.data_path",
    "container.image", "container.binds", "vars.a", "stage", "sweep", "sweep.params",
]
FRAGMENTS = [
    "${project.name}", "${job.name}", "${oc.env:X}", "${oc.env:X,d}", "${oc.env:UNSET}",
    "${.name}", "${..x}", "${...}", "${a.b[0]}", "${vars}", "${sweep}", "${index}",
    "${oc.select:vars.a,3}", "${oc.eval:'1+1'}", "${oc.eval:'1/0'}", "${oc.eval:'__import__'}",
    "${oc.if:${vars.a},x,y}", "${oc.concat:a,b}", "${oc.join:-,${vars.l}}", "${oc.mul:2,x}",
    "${oc.len:3}", "${oc.nope:1}", "${", "}", "${}", "${ }", "${a", "${oc.env:", "${'x'}",
    "???", "\\${", "\\${project.name}", "\\\\${x}", "$", "%j", ":", "- ", "{", "[", "&a", "*a",
    "!!str", "!tag", "# c", "@package", "/container: apptainer", "/backend: megatron",
    *HOSTILE.values(),
]
GROUP_CHOICES = [
    "/container: apptainer", "/container: none", "/backend: megatron", "/backend: bash",
    "/slurm: local", "/job: default", "_self_", "/container: nope", "/nope: x", "container: none",
    "../backend/bash", "/backend: ../container/none",
]
SWEPT = [
    "vars.a", "vars.b", "stage", "backend.bash.command", "slurm.sbatch.time", "slurm.env.X",
    "job.chain_repeat", "backend.megatron.lr", "project.name", "index",
]
# String-valued keys whose values reach the script. Tame configs leave out `project.name` and
# `stage`, which take only a safe alphabet (test_quoting.py covers them).
TAME_PATHS = [
    "backend.bash.command", "slurm.sbatch.comment", "slurm.srun.comment", "slurm.env.X",
    "backend.env.Y", "container.env.Z", "container.image", "project.output_dir", "vars.a",
]
TAME_LISTS = ["slurm.launcher_cmd", "container.binds", "container.options"]
# fmt: on


def _as_entry(text: str) -> Any:
    group, sep, option = text.partition(": ")
    return {group: option} if sep else text


texts = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=4).map("".join),
    st.text(max_size=12),
)
tame_texts = st.lists(
    st.sampled_from([*HOSTILE.values(), "${project.name}", "${oc.env:X,d}", "\\${x}", "%j"])
    | st.text(max_size=6),
    min_size=1,
    max_size=3,
).map("".join)
keys = st.sampled_from(KEYS) | st.sampled_from(DOTTED) | st.text(max_size=8)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
leaves = st.one_of(texts, texts, scalars)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=24,
)
swept_values = st.dictionaries(
    st.sampled_from(SWEPT) | keys, st.lists(leaves, min_size=1, max_size=3), max_size=2
)
swept_points = st.dictionaries(st.sampled_from(SWEPT) | keys, leaves, max_size=2)
sweep_groups = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["product", "list", "zip", ""]),
        "params": swept_values,
        "configs": st.lists(swept_points, max_size=3),
        "defaults": swept_points,
        "filter": st.sampled_from([True, False, "\\${oc.eval:'\\${index} > 0'}"]) | texts,
    },
)
sweeps = st.one_of(
    st.fixed_dictionaries({"params": swept_values}),
    st.fixed_dictionaries({"configs": st.lists(swept_points, min_size=1, max_size=3)}),
    st.fixed_dictionaries(
        {"grids": st.lists(swept_values, max_size=2)}, optional={"base_values": swept_points}
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["product", "list"]), "groups": st.lists(sweep_groups, max_size=3)}
    ),
    sweep_groups,
    trees,
)
defaults_lists = st.lists(st.sampled_from(GROUP_CHOICES).map(_as_entry) | trees, max_size=3)
env_maps = st.dictionaries(
    st.sampled_from(["X", "HOSTILE", "OUTPUT_DIR", "MEGATRON_LM_DIR", "SLURM_PARTITION"]),
    st.sampled_from(FRAGMENTS) | st.text(max_size=8),
    max_size=3,
)
overrides: st.SearchStrategy[list[str]] = st.just([]) | st.lists(
    st.one_of(
        st.builds(
            lambda prefix, key, value: f"{prefix}{key}={value}",
            st.sampled_from(["", "+", "++", "~"]),
            st.sampled_from(DOTTED) | keys,
            st.sampled_from(FRAGMENTS) | texts | st.sampled_from(["[1,2]", "{a: 1}", "[", "1e-4"]),
        ),
        st.builds(
            lambda group, option: f"{group}={option}",
            st.sampled_from(["slurm", "container", "backend", "job"]),
            st.sampled_from(["local", "apptainer", "none", "megatron", "bash", "nope", ""]) | texts,
        ),
        st.builds(lambda key: f"~{key}", st.sampled_from(DOTTED)),
        texts,
    ),
    min_size=1,
    max_size=3,
)

BASE: dict[str, Any] = {"project": {"name": "fz"}, "backend": {"bash": {"command": "true"}}}


def merged(base: Mapping[str, Any], extra: Any) -> Any:
    """`extra` laid over `base` key by key, so random parts land inside a config that works."""
    if not isinstance(extra, dict):
        return extra
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        out[key] = merged(old, value) if isinstance(old, dict) else value
    return out


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, last = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = value


def dump(tree: Any, flow: bool | None, header: str = "") -> str:
    stream = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = flow
    yaml.dump(tree, stream)
    return header + stream.getvalue()


flows = st.sampled_from([False, True, None])


@st.composite
def wild_experiments(draw: st.DrawFn) -> str:
    """Anything: a random tree alone or laid over a working config, random defaults and sweep."""
    # A deep copy: set_dotted below writes into nested maps, which must not be BASE's own.
    tree: dict[str, Any] = merged(copy.deepcopy(BASE), {}) if draw(st.integers(0, 4)) else {}
    if draw(st.booleans()) and tree:
        # Jobs of a sweep need distinct names; the sweep index gives them one.
        set_dotted(tree, "project.name", "fz_${index}")
    paths = st.tuples(st.sampled_from(DOTTED), st.one_of(texts, texts, leaves, trees))
    for dotted, value in draw(st.lists(paths, max_size=3)):
        set_dotted(tree, dotted, value)
    if draw(st.booleans()):
        tree["sweep"] = draw(sweeps)
    if not draw(st.integers(0, 3)):
        tree = merged(tree, draw(st.dictionaries(keys, trees, max_size=3)))
    if not draw(st.integers(0, 3)):
        tree = {"defaults": draw(defaults_lists), **tree}
    headers = st.sampled_from([*[""] * 4, *["# @package _global_\n"] * 3, "# @package x\n"])
    return dump(tree, draw(flows), draw(headers))


@st.composite
def tame_experiments(draw: st.DrawFn) -> str:
    """A working config, maybe in a container or on Megatron, with hostile text at real keys
    and maybe a sweep over one of them."""
    tree: dict[str, Any] = merged(copy.deepcopy(BASE), {"project": {"name": "fz_${index}"}})
    defaults: list[Any] = []
    if draw(st.booleans()):
        defaults.append({"/container": draw(st.sampled_from(["apptainer", "none"]))})
        set_dotted(tree, "container.image", "/images/x.sif")
    backend = draw(st.sampled_from(["bash", "megatron", "lm_eval", "megatron_to_hf"]))
    if backend != "bash":
        defaults.append({"/backend": backend})
    if backend == "megatron":
        set_dotted(tree, "backend.megatron.data_path", draw(st.lists(tame_texts, max_size=2)))
        set_dotted(tree, "backend.megatron.save", draw(tame_texts))
    if backend == "lm_eval":
        set_dotted(tree, "backend.lm_eval.pretrained", draw(tame_texts))
        set_dotted(tree, "backend.lm_eval.tasks", draw(st.lists(tame_texts, min_size=1)))
        set_dotted(tree, "backend.lm_eval.model_args.dtype", draw(tame_texts))
        set_dotted(tree, "backend.lm_eval.options.seed", draw(tame_texts))
    if backend == "megatron_to_hf":
        set_dotted(tree, "backend.megatron_to_hf.checkpoint", draw(tame_texts))
        set_dotted(tree, "backend.megatron_to_hf.options.hf-model", draw(tame_texts))
        set_dotted(tree, "backend.megatron_to_hf.iteration", draw(st.sampled_from(["latest", 3])))
    for dotted, value in draw(st.lists(st.tuples(st.sampled_from(TAME_PATHS), tame_texts))):
        set_dotted(tree, dotted, value)
    for dotted, items in draw(
        st.lists(st.tuples(st.sampled_from(TAME_LISTS), st.lists(tame_texts, max_size=2)))
    ):
        set_dotted(tree, dotted, items)
    if draw(st.booleans()):
        swept = draw(st.sampled_from(TAME_PATHS))
        tree["sweep"] = {"params": {swept: draw(st.lists(tame_texts, min_size=1, max_size=3))}}
    if defaults:
        tree = {"defaults": defaults, **tree}
    return dump(tree, draw(flows))


def compile_or_clean_error(
    folder: Path,
    text: str,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> CompiledBundle | ConfigError:
    """The property: a CompiledBundle, or a ConfigError whose every problem says something."""
    path = folder / "experiment.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        bundle = compile_bundle(
            CompileRequest(experiment=path, overrides=overrides, env=dict(env or {}))
        )
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.message.strip(), error
            assert problem.origin is None or problem.origin.line >= 1, problem
        assert str(error)
        return error
    assert "plan.lock.json" in bundle.files
    assert all(job["script"] in bundle.files for job in bundle.lock_json["jobs"])
    return bundle


@FUZZ
@given(wild_experiments(), overrides, env_maps)
def test_random_configs_compile_or_fail_cleanly(
    text: str, override_list: list[str], env: dict[str, str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        compile_or_clean_error(Path(folder), text, override_list, env)


@FUZZ
@given(tame_experiments(), env_maps)
def test_hostile_configs_compile_to_scripts_bash_can_parse(text: str, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        result = compile_or_clean_error(Path(folder), text, env=env)
        if isinstance(result, ConfigError):
            return
        for name, script in result.files.items():
            if name.startswith("jobs/") and name.endswith(".sbatch"):
                path = Path(folder, "job.sbatch")
                path.write_bytes(script)
                assert bash_syntax_errors(path) == "", (name, script.decode())


@FUZZ
@given(
    st.text(max_size=200)
    | st.lists(
        st.sampled_from([*FRAGMENTS, "\n", "  ", ": ", "- ", "project:", "name:", "defaults:"]),
        max_size=20,
    ).map("".join)
)
def test_random_text_compiles_or_fails_cleanly(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        compile_or_clean_error(Path(folder), text)


@settings(max_examples=100, deadline=None)
@given(overrides, env_maps)
def test_random_overrides_compile_or_fail_cleanly(
    override_list: list[str], env: dict[str, str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        compile_or_clean_error(
            Path(folder),
            "project: {name: fz}\nbackend: {bash: {command: 'true'}}\n",
            override_list,
            env,
        )


def compile_bytes_or_clean_error(folder: Path, data: bytes) -> CompiledBundle | ConfigError:
    """As compile_or_clean_error, for a file of any bytes."""
    path = folder / "experiment.yaml"
    path.write_bytes(data)
    try:
        return compile_bundle(CompileRequest(experiment=path))
    except ConfigError as error:
        assert error.problems and all(p.message.strip() for p in error.problems)
        return error


WORKING = b"project: {name: fz}\nbackend: {bash: {command: 'true'}}\n"
RAW_PIECES = [
    b"\xff", b"\xfe", b"\x00", b"\xe9", b"\xc3", b"\xef\xbb\xbf", b"\xff\xfe", b"\xed\xa0\x80",
    b"\r", b"\r\n", b"\t", b"\x1b", b"\x85", b"\xe2\x80\xa8", b'"\\ud800"', b"&a ", b"*a",
    b"<<: *a\n", b"!!omap ", b"!!python/object:os.system ", b"!!set ", b"!x ", b"[[[[", b"]]",
    b"${a}", b"vars:\n  ", b": ", b"- ", b"# caf\xe9\n", b"9" * 30, b"0x" + b"f" * 30,
]  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=120)
    | st.lists(st.sampled_from(RAW_PIECES) | st.binary(max_size=4), max_size=12).map(
        lambda parts: WORKING + b"".join(parts)
    )
)
def test_random_bytes_compile_or_fail_cleanly(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        compile_bytes_or_clean_error(Path(folder), data)


# fmt: off
ALIAS_ITEMS = [
    "*a", "*b", "&b *a", "[*a, *a]", "{k: *a}", "{<<: *a}", "{<<: [*a, *b]}", "*nope",
    "!!omap [{k: 1}]", "!!set {k}", "!!str 1", "!!int '3'", "!t x", "!!binary eA==",
    '"\\ud800"', '"\\U0001F600"', "9" * 25, "-9223372036854775808", "'${..x}'", "'${.k0}'",
]
# fmt: on


@st.composite
def yaml_with_aliases(draw: st.DrawFn) -> str:
    """A working config plus `vars` written by hand with anchors, aliases, merge keys and tags,
    which a YAML dumper would never produce."""
    lines = ["project: {name: fz}", "backend: {bash: {command: '${vars.x}'}}", "vars:"]
    lines.append("  x: " + draw(st.sampled_from(["hi", "&a {k: 1}", "&a [1, 2]", "&a v", "1"])))
    items = st.sampled_from(ALIAS_ITEMS) | texts.map(repr)
    for number, item in enumerate(draw(st.lists(items, max_size=5))):
        lines.append(f"  k{number}: {item}")
    if draw(st.booleans()):
        lines.append("  m:\n    <<: " + draw(st.sampled_from(["*a", "[*a]", "{z: 1}", "1"])))
    return "\n".join(lines) + "\n"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_with_aliases())
def test_anchors_merges_and_tags_compile_or_fail_cleanly(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        compile_or_clean_error(Path(folder), text)
