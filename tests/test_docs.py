"""The README's promises that code can check: every setting is listed, and the commands it opens with exist."""

import re
from pathlib import Path

from app.config import settings_markdown

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_readme_lists_every_setting_as_the_class_defines_it():
    table = "\n".join(line for line in settings_markdown().splitlines() if line.startswith("|"))
    assert table in README, "README's settings table is stale: paste the table of `python -m app.config`"


def test_readme_starts_with_make_up_and_make_test():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands[:2] == ["make up", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^up:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_readme_links_and_pictures_exist():
    for target in re.findall(r"\]\(([^)#:]+)\)", README):
        assert (REPO / target).exists(), target
