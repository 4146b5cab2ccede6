"""Data files for finetune / eval: a file that is not labelled CSV / JSONL text is one
clear error naming the file (and the line), never a raw JSON, csv or Unicode error."""

import pytest

from qkernels import data


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.jsonl", b'{"text": "a", "label": "x"}\n{not json\n', "line 2 is not valid JSON"),
        ("list.jsonl", b'["a", "x"]\n', "line 1 must be a JSON object"),
        ("short.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b"}\n', r"row 2 lacks"),
        ("short.csv", b"text,label\na,x\nb\n", r"row 2 lacks column\(s\) \['label'\]"),
        ("latin1.csv", "text,label\ncaf\xe9,x\n".encode("latin-1"), "not readable CSV"),
    ],
)
def test_bad_labelled_files_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as e:
        data.read_labelled(path)
    assert name in str(e.value)


def test_good_labelled_files_read(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": 0}\n')
    assert data.read_labelled(tmp_path / "a.jsonl") == [("a", "1"), ("b", "0")]
    (tmp_path / "a.csv").write_text('text,label,extra\n"a, b",x,1\n')
    assert data.read_labelled(tmp_path / "a.csv") == [("a, b", "x")]


def test_non_utf8_text_names_the_file(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(ValueError, match="t.txt' is not UTF-8 text"):
        data.read_text(tmp_path / "t.txt")
