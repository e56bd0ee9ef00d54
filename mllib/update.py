"""Take the course's updates without losing your work: ``python -m mllib.update`` (``make update``).

Fetches the course's branch (``git fetch``; by default the current branch's upstream, else
``origin`` and the current branch) and merges it into the working tree file by file, after the
rules of nbgitpuller (jupyterhub/nbgitpuller, "Automatic merging behavior"), so that a
student never has to resolve anything by hand and never loses an answer:

1. A file the course changed or added that you did not change: you get the course's version.
2. A notebook you only ran (outputs, execution counts or metadata differ, no cell's source
   edited) counts as unchanged: you get the course's version (run it again for your outputs).
3. A file both you and the course changed: your copy stays where it is, untouched, and the
   course's version is written beside it (``labs/01_federated_learning.new.ipynb``), with a
   line on stdout. (nbgitpuller merges such files line by line, keeping your lines where
   both edited the same ones; a notebook is JSON, where a line merge can break the file, so
   here the whole file is yours.)
4. A file you deleted comes back in the course's version (delete a lab to start it over).
5. A file you created under a name the course now uses: yours stays, the course's goes beside.
6. A file the course deleted goes, unless you changed it (then it stays).

Your changes are never committed: afterwards the branch points at the course's commit (or, if
you made commits of your own, at a merge commit whose files are the course's) and
``git status`` shows exactly what differs from the course: your work.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

from mllib.labs import beside

IDENTITY = ("-c", "user.name=make update", "-c", "user.email=make-update@localhost")


class UpdateError(RuntimeError):
    """A git step failed or the repository is in a state the update cannot handle."""


def git(repo: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``git -C repo args`` and capture its output as bytes."""
    env = dict(os.environ, GIT_LITERAL_PATHSPECS="1", LANG="C")
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], check=False, capture_output=True, env=env)
    except FileNotFoundError as missing:
        raise UpdateError("git is not installed (make update needs it)") from missing
    if check and done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise UpdateError(f"git {' '.join(args)}: {message}")
    return done


def text(repo: pathlib.Path, *args: str) -> str:
    return git(repo, *args).stdout.decode().strip()


def changes(repo: pathlib.Path, base: str, other: str | None = None) -> dict[str, str]:
    """``{path: "A"/"M"/"D"/"T"}`` from ``base`` to ``other`` (a commit, or the working tree
    when None), renames counted as a deletion and an addition."""
    git(repo, "update-index", "-q", "--refresh", check=False)
    out = git(repo, "diff", "--name-status", "--no-renames", "-z", base, *([other] if other else [])).stdout
    fields = out.decode().split("\0")[:-1]
    return {path: status[0] for status, path in zip(fields[::2], fields[1::2])}


def sources(data: bytes) -> list[tuple[str, str]] | None:
    """The cells of a notebook as (type, source) pairs; None if it is not a notebook."""
    try:
        cells = json.loads(data)["cells"]
        return [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
                for c in cells]  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None


def only_ran(before: bytes, after: bytes) -> bool:
    """Whether notebook ``after`` differs from ``before`` only by running it: the same cells
    with the same sources (outputs, execution counts, metadata and cell ids may differ)."""
    cells = sources(before)
    return cells is not None and cells == sources(after)


def upstream(repo: pathlib.Path, remote: str | None, branch: str | None) -> tuple[str, str]:
    """The course's remote and branch: the arguments, else the current branch's upstream,
    else ``origin`` and the current branch's name."""
    current = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.decode().strip()

    def config(key: str) -> str:
        return git(repo, "config", "--get", key, check=False).stdout.decode().strip()

    remote = remote or (config(f"branch.{current}.remote") if current else "") or "origin"
    branch = branch or (config(f"branch.{current}.merge") if current else "").removeprefix("refs/heads/") or current
    if not branch:
        raise UpdateError("HEAD is detached and no branch was named: pass --branch (e.g. --branch main)")
    return remote, branch


def update(repo: str | os.PathLike = ".", remote: str | None = None, branch: str | None = None):
    """Fetch the course and merge it into the working tree of ``repo`` (see the module's rules).

    Yields:
        Lines to show: the branch fetched, then one line per file taken, kept or removed
        (once all of them are done), and a last line naming the course's commit.

    Raises:
        UpdateError: when a git step fails (no network, no such remote or branch, a lock,
        unrelated histories). Until the fetch has succeeded, nothing has changed.
    """
    found = git(pathlib.Path(repo), "rev-parse", "--show-toplevel", check=False)
    if found.returncode != 0:
        raise UpdateError(f"{repo} is not a git clone of the course (make update needs one: git clone URL)")
    repo = pathlib.Path(found.stdout.decode().strip())
    remote, branch = upstream(repo, remote, branch)
    yield f"fetching the course: {remote} {branch}"
    git(repo, "fetch", "--quiet", remote, f"refs/heads/{branch}")
    theirs = text(repo, "rev-parse", "--verify", "FETCH_HEAD^{commit}")
    head = text(repo, "rev-parse", "--verify", "HEAD^{commit}")
    found = git(repo, "merge-base", head, theirs, check=False)
    if found.returncode != 0:
        raise UpdateError(f"{remote} {branch} shares no history with this clone: clone the course afresh")
    base = found.stdout.decode().strip()

    def content(rev: str, path: str) -> bytes:  # as `git checkout` would write it
        return git(repo, "cat-file", "--filters", f"{rev}:{path}").stdout

    def local(path: str) -> bytes | None:
        file = repo / path
        return file.read_bytes() if file.is_file() and not file.is_symlink() else None

    course, mine = changes(repo, base, theirs), changes(repo, base)
    take, remove, lines = [], [], []
    for path, kind in sorted(course.items()):
        if kind == "D":
            if path not in mine:
                remove.append(path)
            elif mine[path] != "D":
                lines.append(f"kept your {path}: the course deleted it")
            continue
        new, yours = content(theirs, path), local(path)
        if yours == new:
            continue
        exists = (repo / path).exists() or (repo / path).is_symlink()
        if not exists or (kind != "A" and path not in mine):
            take.append(path)
            lines.append(f"took {path}" + (" (new)" if kind == "A" else " (restored)" if not exists else ""))
        elif kind != "A" and path.endswith(".ipynb") and yours is not None and only_ran(content(base, path), yours):
            take.append(path)
            lines.append(f"took {path} (you had only run it: run it again for your outputs)")
        else:
            previous = content(base, path) if kind != "A" else None
            ours = (new, previous)  # the course's versions: a copy beside holding one is ours to replace
            copy = beside(repo / path, lambda p, ours=ours: p.read_bytes() in ours)
            copy.write_bytes(new)
            lines.append(f"kept your {path}; the course's new version is in {copy.relative_to(repo)}: "
                         "copy what you need from it")  # fmt: skip
    # nbgitpuller's case 4: what you deleted comes back (delete a lab to start it over).
    for path, kind in sorted(mine.items()):
        if kind == "D" and path not in course and not (repo / path).exists():
            take.append(path)
            lines.append(f"took {path} (restored)")

    if take:
        git(repo, "checkout", theirs, "--", *take)
    for path in remove:
        file = repo / path
        if file.is_file() or file.is_symlink():
            file.unlink()
            lines.append(f"removed {path} (the course deleted it)")
            for folder in file.parents:
                if folder == repo or any(folder.iterdir()):
                    break
                folder.rmdir()

    if theirs == head or git(repo, "merge-base", "--is-ancestor", theirs, head, check=False).returncode == 0:
        target = head  # nothing new from the course
    elif git(repo, "merge-base", "--is-ancestor", head, theirs, check=False).returncode == 0:
        target = theirs
    else:  # the student committed: keep those commits in the history, the course's files in the tree
        message = f"Merge the course ({remote} {branch}) by make update: your changes stay in the working tree"
        target = text(repo, *IDENTITY, "commit-tree", f"{theirs}^{{tree}}", "-p", head, "-p", theirs, "-m", message)
    git(repo, "reset", "--quiet", "--mixed", target)
    yield from lines
    yield f"up to date with {remote} {branch} ({theirs[:7]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mllib.update", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".", help="the clone of the course (default: here)")
    parser.add_argument("--remote", help="the course's remote (default: the branch's upstream, else origin)")
    parser.add_argument("--branch", help="the course's branch (default: the branch's upstream, else this branch)")
    args = parser.parse_args(argv)
    try:
        for line in update(args.repo, args.remote, args.branch):
            print(line)
    except UpdateError as error:  # a git message, not a traceback
        print(f"make update: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
