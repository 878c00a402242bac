"""An ablation directory keeps the spec it ran: a changed spec is refused with a diff, or (--new-dir) goes on
in NAME-N, and rerunning that changed spec resumes there instead of making NAME-3."""
import pytest

from simclr.ablate.store import RECORD, claim
from simclr.config.schema import ConfigError


def test_changed_spec_is_refused_with_a_diff_or_moved_to_a_new_directory(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("name: t\n")
    root = tmp_path / "t"
    old = "arms:\n  plain: {ops: [grayscale]}\nspec: {name: t}\n"
    new = "arms:\n  plain: {ops: [horizontal_flip]}\nspec: {name: t}\n"
    assert claim(root, old, spec_file, new_dir=False) == root
    assert claim(root, old, spec_file, new_dir=False) == root  # the same spec resumes in place
    with pytest.raises(ConfigError) as err:
        claim(root, new, spec_file, new_dir=False)
    assert "-  plain: {ops: [grayscale]}" in str(err.value) and "+  plain: {ops: [horizontal_flip]}" in str(err.value)
    assert (root / RECORD).read_text() == old  # nothing overwritten
    assert claim(root, new, spec_file, new_dir=True) == tmp_path / "t-2"
    assert claim(root, new, spec_file, new_dir=True) == tmp_path / "t-2"
    assert (tmp_path / "t-2" / RECORD).read_text() == new and (root / RECORD).read_text() == old


def test_keys_a_newer_simclr_added_at_their_defaults_do_not_make_a_different_spec():
    import yaml

    from simclr.ablate.store import _same

    new = {"spec": {"name": "s"}, "arms": {}, "base_config": {
        "seed": 0, "data": {"loader": "memory", "num_workers": None, "test_split": "test", "batch_size": 64}}}
    old = {"spec": {"name": "s"}, "arms": {}, "base_config": {   # written before test_split existed,
        "seed": 0, "data": {"loader": "memory", "num_workers": 4, "batch_size": 64}}}   # num_workers then 4
    dump = lambda r: yaml.safe_dump(r, sort_keys=True)  # noqa: E731
    assert _same(dump(old), dump(new))
    changed = {**new, "base_config": {**new["base_config"], "data": {**new["base_config"]["data"], "batch_size": 32}}}
    assert not _same(dump(old), dump(changed))                   # a real change is still one
    off_default = {**new, "base_config": {**new["base_config"],
                                          "data": {**new["base_config"]["data"], "test_split": "val"}}}
    assert not _same(dump(old), dump(off_default))               # a new key away from its default too
    streamed = lambda r: {**r, "base_config": {**r["base_config"],  # noqa: E731
                                               "data": {**r["base_config"]["data"], "loader": "stream"}}}
    assert not _same(dump(streamed(old)), dump(streamed(new)))   # with the streamed loader, workers matter


def test_a_study_recorded_before_the_method_section_is_the_same_simclr_study():
    """Records written before `method:` existed ran SimCLR: today's record of the same spec (method at its
    defaults) is that study; the same spec with another method is not."""
    import yaml

    from simclr.ablate.store import _same
    from simclr.config.run import load_config
    from simclr.config.schema import to_dict

    dump = lambda cfg: yaml.safe_dump({"spec": {"name": "s"}, "arms": {}, "base_config": cfg}, sort_keys=True)  # noqa: E731
    today = to_dict(load_config(None, ["data.name=digits"]))
    before = {k: v for k, v in today.items() if k != "method"}
    assert _same(dump(before), dump(today))
    assert not _same(dump(before), dump(to_dict(load_config(None, ["data.name=digits", "method.name=byol"]))))


def test_auto_precision_matches_a_study_recorded_with_resolved_or_older_explicit_values():
    """Studies recorded before `auto` hold precision '32' / channels_last false (then the defaults); the same spec
    read today says auto, which train.run resolves per run. That is not an edited study; an explicit change is."""
    import yaml

    from simclr.ablate.store import _same

    record = lambda precision, channels_last: yaml.safe_dump({  # noqa: E731
        "spec": {"name": "s"}, "arms": {},
        "base_config": {"seed": 0, "trainer": {"precision": precision, "channels_last": channels_last}}})
    assert _same(record("32", False), record("auto", "auto"))
    assert _same(record("bf16-mixed", True), record("auto", "auto"))
    assert not _same(record("32", False), record("bf16-mixed", "auto"))  # asked for explicitly: a change
    assert not _same(record("32", False), record("auto", True))
    assert not _same(record("auto", "auto"), record("32", False))
