import pytest

from clipforget.core.atomic import write_atomic, write_json


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"ok": 1})

    def crash(tmp):
        with open(tmp, "w") as handle:
            handle.write('{"half": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, crash)
    assert target.read_text().strip().startswith('{\n  "ok": 1')
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
