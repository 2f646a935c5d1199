"""Values that do not depend on a job's sweep point are resolved once and shared by its jobs
(`compiler/depends.py`): the bundle is byte for byte the one each job resolved alone gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from oellm.compiler import depends, resolve
from tests.helpers import compile_error, compile_file, rendered, write

EXPERIMENT = """
project: {name: shared}
job: {name: "s_${vars.x}_${vars.key}_${index}"}
backend:
  bash:
    command: >-
      echo ${vars.double} ${vars.chain} ${vars.fixed} ${vars.pick} ${vars.items.0}
      ${vars.items.1} ${vars.block.a} ${vars.deep} ${vars.near.up} ${vars.whole.b}
      ${oc.len:${vars.copy}}
vars:
  x: 1
  key: fixed
  double: "${oc.eval:'2 * ${vars.x}'}"
  chain: "${vars.double}"
  fixed: "${oc.env:SHARED_TEST_UNSET,constant}"
  pick: "${oc.select:vars.${vars.key},none}"
  items: ["${vars.x}", "${vars.fixed}"]
  block: {a: "${vars.x}", b: plain}
  copy: "${vars.block}"
  alias: "${vars.block}"
  deep: "${vars.alias.a}"
  whole: {b: "${vars.fixed}"}
  near: {up: "${..fixed}-${..x}"}
sweep:
  type: list
  groups:
    - params: {vars.x: [1, 2, 3]}
    - params: {vars.x: [4, 5], vars.key: [double, chain]}
"""


def _unshared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(depends.Shared, "independent", lambda self, path: False)


def test_shared_values_give_the_bundle_each_job_alone_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "exp.yaml", EXPERIMENT)
    shared = compile_file(path)
    with monkeypatch.context() as patch:
        _unshared(patch)
        alone = compile_file(path)
    assert shared.lock == alone.lock
    assert dict(shared.files) == dict(alone.files)
    assert len(shared.lock_json["jobs"]) == 7


def test_only_values_that_do_not_read_a_swept_key_are_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "exp.yaml", EXPERIMENT)
    made: list[depends.Shared] = []
    real = resolve.ResolvedParts.of

    def spying(self: resolve.ResolvedParts, base: dict[str, object], values: object) -> object:
        found = real(self, base, values)  # type: ignore[arg-type]
        if found not in made:
            made.append(found)
        return found

    monkeypatch.setattr(resolve.ResolvedParts, "of", spying)
    compile_file(path)
    assert len(made) == 2  # one per set of swept keys
    for shared in made:
        assert shared.values[("vars", "fixed")] == "constant"
        assert shared.values[("vars", "whole")] == {"b": "constant"}
        for dependent in ("double", "chain", "pick", "items", "block", "copy", "deep", "near"):
            assert ("vars", dependent) not in shared.values, dependent
        assert ("job", "name") not in shared.values


def test_an_error_in_a_shared_value_reads_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path / "exp.yaml",
        """
        project: {name: shared}
        job: {name: "s_${vars.x}", chain_repeat: "${vars.links}"}
        backend: {bash: {command: "echo ${vars.x}"}}
        vars: {x: 1, links: many}
        sweep: {grids: [{vars.x: [1, 2]}]}
        """,
    )
    shared = rendered(compile_error(path))
    with monkeypatch.context() as patch:
        _unshared(patch)
        alone = rendered(compile_error(path))
    assert shared == alone
    assert "exp.yaml:4:" in shared  # where the value was written, not where it is used
