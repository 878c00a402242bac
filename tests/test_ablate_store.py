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
