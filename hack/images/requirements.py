"""Print the requirements of local Python projects (their pyproject.toml
dependencies plus the optional groups named in brackets), one per line, less
the local projects themselves. The images install these in a layer of their
own before the source is copied, so a code change rebuilds only the last
layers.

Usage: python3 requirements.py DIR[extra,extra] [DIR...]
"""

import re
import sys
import tomllib


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip()).group(0))


def main(args: list[str]) -> None:
    local, wanted = set(), []
    for arg in args:
        directory, _, extras = arg.partition("[")
        with open(f"{directory}/pyproject.toml", "rb") as f:
            project = tomllib.load(f)["project"]
        local.add(canonical(project["name"]))
        wanted += project.get("dependencies", [])
        for extra in filter(None, extras.rstrip("]").split(",")):
            wanted += project["optional-dependencies"][extra]
    for requirement in dict.fromkeys(wanted):
        if requirement_name(requirement) not in local:
            print(requirement)


if __name__ == "__main__":
    main(sys.argv[1:])
