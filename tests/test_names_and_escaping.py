"""Names are plain where they enter, and text from files is literal text in the reports.

A results file, a model or the environment may hold Markdown and HTML: a viewer that renders
a report must show it as the characters it is, never run it, link it or make it a heading.
The reports are rendered here by a real CommonMark renderer with raw HTML allowed (as many
viewers do), with GitHub's tables.
"""

import json

import pytest
from markdown_it import MarkdownIt

from conftest import one_line_error, quantlab
from quantlab import compare, report, safe_text, tables

HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
           "[click me](https://evil.example/)", "![pixel](https://evil.example/p.png)",
           "line\n## Injected heading", "a | b", "`code`", "&lt;script&gt;", "back\\slash",
           "<https://evil.example/>", "tab\there\x1b[31m", "\u2028## Injected too"]


def _html(text):
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def _shows_only_text(html):
    """No element made from the text: no script, image, link or heading."""
    return not any(tag in html for tag in ("<script", "<img", "<a ", "<h2", "<code"))


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_renders_as_the_characters_it_holds(text):
    shown = safe_text.markdown(text)
    assert "\n" not in shown
    html = _html(f"- {shown}")
    assert _shows_only_text(html), html
    # What a reader sees is the text itself, on one line.
    expected = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    rendered = html.removeprefix("<ul>\n<li>").removesuffix("</li>\n</ul>\n")
    assert rendered.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"') \
        .replace("&amp;", "&") == expected


@pytest.mark.parametrize("text", HOSTILE)
def test_a_table_cell_holds_the_text_and_nothing_else(text):
    html = _html(tables.markdown_table(["name", "value"], [[text, "1"]]))
    assert _shows_only_text(html), html
    assert html.count("<td>") == 2 and "<td>1</td>" in html  # no cell split or swallowed


@pytest.mark.parametrize("name, plain", [
    ("laptop", True), ("c7i.large_2-b", True), ("x" * 64, True), ("x" * 65, False),
    (".", False), ("..", False), ("../etc", False), ("a/b", False), ("a b", False),
    ("laptop\n## Injected heading", False), ("", False), ("naïve", False), (None, False),
])
def test_plain_names_are_letters_digits_dot_underscore_and_dash(name, plain):
    assert safe_text.is_plain_name(name) is plain


@pytest.mark.parametrize("name", ["laptop\n## Injected heading", "x" * 500, "..", "a/b",
                                  "<script>"])
def test_a_machine_name_that_is_not_plain_is_refused_before_any_work(tmp_path, name):
    """500 characters gave 'File name too long'; a newline put a heading into report.md."""
    out = tmp_path / "report"
    line = one_line_error(
        quantlab("run", "--dataset", "digits", "--quick", "--nets", "conv", "--out", str(out),
                 env={"QUANTLAB_MACHINE": name, "QUANTLAB_CACHE": str(tmp_path / "cache")}),
        "QUANTLAB_MACHINE", "is not a plain name", "name the machine like laptop")
    assert len(line) < 300
    assert not out.exists() and not (tmp_path / "cache").exists()


def _results(name, **machine):
    return {"schema": compare.READS, "machine": {"name": name, **machine}, "nets": {},
            "cases": [{"net": "conv", "variant": variant, "runtime": "litert", "batch_size": 1,
                       "median": median} for variant, median in (("float32", 2e-3), ("int8", 1e-3))]}


def test_text_from_results_files_is_literal_in_compare_md(tmp_path):
    hostile = _results(HOSTILE[0], cpu={"model": HOSTILE[2]},
                       versions={HOSTILE[1]: HOSTILE[3], "quantlab": "## Injected heading"})
    hostile["cases"].append({"net": HOSTILE[5], "variant": "int8", "runtime": "openvino",
                             "batch_size": 1, "not_run": HOSTILE[4] + HOSTILE[0]})
    hostile["dataset"] = {"name": HOSTILE[1]}
    files = []
    for number, results in enumerate([_results("plain"), hostile]):
        files.append(tmp_path / f"{number}.json")
        files[-1].write_text(json.dumps(results))
    out = tmp_path / "out"
    done = quantlab("compare", *map(str, files), "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = (out / "compare.md").read_text()
    html = _html(text)
    for made in ("<script", "<img src=x", '<img src="x"', '<a href="https://evil', "<h2>Injected"):
        assert made not in html, made
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # shown, as text
    assert not [line for line in text.splitlines() if line.startswith("## Injected")]
    comparison = json.loads((out / "compare.json").read_text())
    assert comparison["machines"][1]["name"] == HOSTILE[0]  # the data itself is kept as it was


@pytest.mark.parametrize("field, edit", [
    ("cases[0].variant", lambda r: r["cases"][0].update(variant="../../etc/passwd")),
    ("cases[1].runtime", lambda r: r["cases"][1].update(runtime="<script>")),
    ("runtimes", lambda r: r.update(runtimes=["litert\n## Injected"])),
])
def test_variants_and_runtimes_in_a_results_file_must_be_plain_names(tmp_path, field, edit):
    results = _results("edited")
    edit(results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    one_line_error(quantlab("compare", str(path), "--out", str(tmp_path / "out")),
                   f"({field} is not a plain name)")
    assert not (tmp_path / "out").exists()


def test_reasons_and_names_in_report_md_are_literal():
    """What the study's own report prints from the environment and from errors."""
    hostile = HOSTILE[4] + " " + HOSTILE[0]
    results = {"accuracy": [{"net": "conv", "variant": "int8", "runtime": "openvino",
                             "not_run": hostile}], "cases": []}
    lines = report.not_run_lines(results)
    lines += report.not_counted_lines([{"net": "conv", "variant": "int8", "runtime": "litert",
                                        "batch_size": 1, "not_counted": hostile}])
    html = _html("\n".join(lines))
    assert "<script" not in html and "<h2" not in html and len(lines) == 2


@pytest.mark.parametrize("stem", [*HOSTILE, "L" * 240, "a $\\nope$ b", "..", "-k", "a or b"])
def test_a_model_files_stem_becomes_a_plain_net_name(stem):
    name = safe_text.net_name(f"/models/{stem.replace('/', '_')}.keras")
    assert safe_text.is_plain_name(name) and name == safe_text.net_name(f"{name}.keras")
