"""The sealed functions of the reporter that judge paths: where one leads, and whether an event on it leaves scratch.

They keep sealed.py's discipline (watch.py seals them): each takes what it uses as its last
parameter, `bound`, looks up no global or builtin name and has no closure. A path argument is read
only as an exact copy the C level makes. One given as anything but a string or bytes (a buffer such
as a memoryview, bytearray or array, which `os` functions take too, or an object only the call
itself converts, as `sqlite3.connect` does) is always reported, shown as far as it can be read
without running code of the candidate's. A descriptor given where a path may be is judged by its
file's device and owner: the child has no /proc to name it.
"""

from __future__ import annotations

from typing import Any


def resolved(path: str, links: bool = True, bound: tuple[Any, ...] = ()) -> str:
    """The path absolute, its `..` and (with `links`) its symbolic links followed as the kernel would, with no
    help from os.path; relative to a working directory that was removed, from a folder that is nowhere."""
    current_directory, read_link, failure, count, nowhere = bound
    if path.startswith("/"):
        start = path
    else:
        try:
            start = current_directory() + "/" + path
        except failure:  # removed: where its `..` leads is unknown, so nothing relative counts as in scratch
            start = nowhere + "/" + path
    pending = start.split("/")
    done, position, followed = "", 0, 0
    while position < count(pending):
        part = pending[position]
        position += 1
        if part == "" or part == ".":
            continue
        if part == "..":
            done = done[: done.rfind("/")] if done else ""
            continue
        candidate = done + "/" + part
        if not links:
            done = candidate
            continue
        try:
            target = read_link(candidate)
        except failure:  # not a link (or not there): taken as it is
            done = candidate
            continue
        followed += 1
        if followed > 40:  # the kernel's own limit: such a path opens nothing
            return candidate
        if target.startswith("/"):
            done = ""
        pending = target.split("/") + pending[position:]
        position = 0
    return done or "/"


def entry_of(path: str, bound: tuple[Any, ...] = ()) -> str:
    """Where the entry a path names lies, its folder resolved and its last part not followed: the kernel removes,
    renames or links a link itself, not where it leads."""
    (resolved,) = bound
    tail = path[path.rfind("/") + 1 :]
    if tail == "" or tail == "." or tail == "..":
        return resolved(path)
    folder = resolved(path[: path.rfind("/") + 1] or ".")
    return (folder if folder != "/" else "") + "/" + tail


def another_process(where: str, named: str, bound: tuple[Any, ...] = ()) -> bool:
    """Whether a path, as it resolves (`where`) or as written (`named`), leads into another process's /proc.

    /proc/self and /proc/thread-self are the child's own, but for their `root` and `cwd`, which lead
    anywhere (as links they lead to a pid of procfs's namespace, which is not the child's: the path as
    written decides).
    """
    (count,) = bound
    if not ((where + "/").startswith("/proc/") or (named + "/").startswith("/proc/")):
        return False
    for own in ("/proc/self", "/proc/thread-self"):
        if named == own or named.startswith(own + "/"):
            parts = named[count(own) :].split("/")
            if "root" in parts or "cwd" in parts:
                return True
            # fd/N and map_files/X are links too: a path that goes on past one leads wherever it leads.
            position = 0
            while position < count(parts):
                if parts[position] in ("fd", "map_files") and count(parts) > position + 2:
                    return True
                position += 1
            return False
    return True


def path_text(value: Any, bound: tuple[Any, ...] = ()) -> tuple[str | None, str]:
    """An argument naming a path: (the path as the kernel reads it, or None; how it was given: "" for a string or
    bytes, "descriptor" for an integer, else the name of its type).

    A buffer is copied by its own C methods (a prefix longer than any path), nothing else is read:
    `bytes()` would call a `__bytes__` of the candidate's subclass.
    """
    plain, kind_of, subclass, name_of, types, buffers, prefix, failure = bound
    text, data, number = types
    kind = kind_of(value)
    if subclass(kind, text) or subclass(kind, data):
        path = plain(value)
        return (path.decode("utf-8", "surrogateescape") if kind_of(path) is data else path), ""
    if subclass(kind, number):
        return None, "descriptor"
    name = plain(name_of(kind))
    given = name[:60] if kind_of(name) is text else "an object"
    for buffer, cut, copy in buffers:
        if subclass(kind, buffer):
            try:
                return data(copy(cut(value, prefix))).decode("utf-8", "surrogateescape"), given
            except failure:  # a released view, one of no dimension: shown as what it is
                break
    return None, given


def odd_path(found: Any, kind: str, what: str, path: str | None, given: str, bound: tuple[Any, ...] = ()) -> Any:
    """The report on a path given as something else than a string or bytes, made wherever it leads: the judgement
    `found` if there is one, else `kind`, with the path shown as far as it could be read."""
    if found is not None:
        return found[0], found[1][:260] + " (the path given as " + given + ")"
    named = path[:200] if path is not None else "a path the reporter cannot read"
    return kind, what + " " + named + " (given as " + given + ")"


def in_scratch(where: str, scratch: str, bound: tuple[Any, ...] = ()) -> bool:
    """Whether a resolved path is the scratch folder or lies in it."""
    return where == scratch or where.startswith(scratch + "/")


def descriptor_outside(descriptor: int, context: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> bool:
    """Whether a descriptor's file may lie outside scratch: only one on scratch's device, owned by the child's uid
    where it has one of its own (watch.own_files), is known to be the child's."""
    status, failures = bound
    device, owner = context[4]
    try:
        found = status(descriptor)
    except failures:
        return False  # no open descriptor: the call changes nothing
    return found.st_dev != device or found.st_uid != owner


def classify_path(
    event: str, args: tuple[Any, ...], context: tuple[Any, ...], bound: tuple[Any, ...] = ()
) -> tuple[str, str] | None:
    """(kind, detail) for an event on a path that leads outside scratch or into another process, or None."""
    path_text, resolved, entry_of, another_process, in_scratch, odd_path, count, classifiers = bound
    classify_open, classify_database, classify_change = classifiers
    scratch = context[2]
    found: Any = None
    if event == "open" and args:
        return classify_open(args, context)
    if event == "sqlite3.connect" and args:
        return classify_database(args, context)
    if (event == "os.listdir" or event == "os.scandir") and args and args[0] is not None:
        listed, given = path_text(args[0])
        if listed is not None and another_process(resolved(listed), resolved(listed, False)):
            found = "secret_read", "lists " + listed[:200]
        # A descriptor's folder was judged when it was opened (shutil.rmtree lists so).
        return odd_path(found, "secret_read", "lists", listed, given) if given and given != "descriptor" else found
    if event == "os.chdir" and args:
        # Relative paths are judged against the working directory: out of scratch, they would be misjudged.
        directory, given = path_text(args[0])
        if given == "descriptor":
            return "tampering", "moves its working directory to a directory descriptor"
        if directory is not None and not in_scratch(resolved(directory), scratch):
            found = "tampering", "moves its working directory out of scratch, to " + directory[:200]
        return odd_path(found, "tampering", "moves its working directory to", directory, given) if given else found
    if event == "shutil.rmtree" and args:
        # Its removals are relative to a directory descriptor, not judged: the tree is, here. The event has the
        # argument as given (a path object is the candidate's to convert), and a descriptor the path may start from.
        tree, given = path_text(args[0])
        relative = count(args) > 1 and args[1] is not None and not (tree or "/").startswith("/")
        if not given and tree is not None and not relative and not in_scratch(entry_of(tree), scratch):
            return "file_write", "shutil.rmtree " + tree[:200]
    if event == "os.symlink" and count(args) > 1:
        # A link to the outside, made in scratch, would let later paths lead out unseen (a folder swapped
        # under a path being opened): making one is reported.
        (target, target_given), (link, link_given) = path_text(args[0]), path_text(args[1])
        if target is not None and link is not None:
            leads = resolved(target if target.startswith("/") else link[: link.rfind("/") + 1] + target)
            if not in_scratch(leads, scratch):
                found = "file_write", "links " + link[:100] + " to " + target[:100] + ", outside scratch"
        if target_given or link_given:
            shown = link[:100] + " to " + target[:100] if target is not None and link is not None else None
            return odd_path(found, "file_write", "links", shown, target_given or link_given)
        if found is not None:
            return found
    return classify_change(event, args, context)


def judge_open(path: str, writes: bool, what: str, context: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> Any:
    """(kind, detail) for opening another process's files, bytecode of the candidate's own, or a file outside
    scratch for writing; or None."""
    resolved, another_process, in_scratch = bound
    scratch, trusted = context[2], context[3]
    where, named = resolved(path), resolved(path, False)
    if another_process(where, named):
        return "secret_read", what + " " + path[:200]
    if where.endswith(".pyc") and not where.startswith(trusted) and not named.startswith(trusted):
        return "native_code", "reads bytecode of its own: " + path[:200]
    if writes and not in_scratch(where, scratch):
        return "file_write", what + " " + path[:200] + " for writing"
    return None


def classify_open(
    args: tuple[Any, ...], context: tuple[Any, ...], bound: tuple[Any, ...] = ()
) -> tuple[str, str] | None:
    """(kind, detail) for an `open` judge_open reports, or of a path given as something else than a string or
    bytes; or None."""
    path_text, plain, judge_open, odd_path, kind_of, count, types, constants = bound
    text, number = types
    write_flags, write_modes = constants
    path, given = path_text(args[0])
    if given == "descriptor":
        return None  # a descriptor open already: judged when it was opened
    mode = plain(args[1]) if count(args) > 1 else None
    flags = plain(args[2]) if count(args) > 2 else 0
    writes = (kind_of(mode) is text and not write_modes.isdisjoint(mode)) or (
        kind_of(flags) is number and flags & write_flags != 0
    )
    found = judge_open(path, writes, "open", context) if path is not None else None
    return odd_path(found, "file_write" if writes else "secret_read", "open", path, given) if given else found


def classify_database(
    args: tuple[Any, ...], context: tuple[Any, ...], bound: tuple[Any, ...] = ()
) -> tuple[str, str] | None:
    """(kind, detail) for `sqlite3.connect`, which opens its file itself (no `open` event), to write by default:
    judged as an open for writing, of the name as a file and, where it reads as one, as an SQLite URI."""
    path_text, judge_open, odd_path, uri_path = bound
    path, given = path_text(args[0])
    if not given and (path == "" or path == ":memory:"):
        return None  # in memory, or a temporary file in TMPDIR (scratch)
    found = judge_open(path, True, "sqlite3.connect", context) if path is not None else None
    if found is None and path is not None and path.startswith("file:"):  # the event does not say if `uri` was set
        found = judge_open(uri_path(path), True, "sqlite3.connect", context)
    return odd_path(found, "file_write", "sqlite3.connect", path, given) if given else found


def uri_path(uri: str, bound: tuple[Any, ...] = ()) -> str:
    """The file an SQLite URI names: `file:` and an authority dropped, the query and fragment cut, %HH decoded
    (SQLite ends the name at a decoded NUL)."""
    to_int, data, hexadecimal, count = bound
    path = uri[5:]
    if path.startswith("//"):
        path = path[path.find("/", 2) :] if path.find("/", 2) >= 0 else ""
    for mark in ("?", "#"):
        if path.find(mark) >= 0:
            path = path[: path.find(mark)]
    pieces = path.split("%")
    decoded = pieces[0].encode("utf-8", "surrogateescape")
    for piece in pieces[1:]:
        if count(piece) >= 2 and piece[0] in hexadecimal and piece[1] in hexadecimal:
            decoded += data((to_int(piece[:2], 16),)) + piece[2:].encode("utf-8", "surrogateescape")
        else:
            decoded += b"%" + piece.encode("utf-8", "surrogateescape")
    name = decoded.decode("utf-8", "surrogateescape")
    return name[: name.find("\x00")] if name.find("\x00") >= 0 else name


def classify_change(
    event: str, args: tuple[Any, ...], context: tuple[Any, ...], bound: tuple[Any, ...] = ()
) -> tuple[str, str] | None:
    """(kind, detail) for an event that changes a file (watch.FILE_CHANGES) outside scratch, through a descriptor
    of a file outside it, or through a path given as something else than a string or bytes; or None."""
    sealed, kind_of, count, number, constants = bound
    path_text, plain, short, resolved, entry_of, in_scratch, odd_path, descriptor_outside, moved_link = sealed
    file_changes, links_followed = constants
    for changing, paths in file_changes:
        if event != changing:
            continue
        for index, folder_index in paths:
            if index >= count(args):
                continue
            changed, given = path_text(args[index])
            if given == "descriptor":
                if descriptor_outside(plain(args[index]), context):
                    return "file_write", event + short(args) + " on a descriptor of a file outside scratch"
                continue
            folder: Any = plain(args[folder_index]) if 0 <= folder_index < count(args) else None
            found: Any = None
            # A relative path from a directory descriptor leads from a folder only the kernel knows (shutil.rmtree
            # works so): not judged. An absolute one leads where it says.
            judged = changed is not None and not (kind_of(folder) is number and folder >= 0 and changed[:1] != "/")
            if judged and not in_scratch(
                resolved(changed) if event in links_followed else entry_of(changed), context[2]
            ):
                found = "file_write", event + (" " + changed[:200] if given else short(args))
            if given:
                return odd_path(found, "file_write", event, changed, given)
            if found is not None:
                return found
        return moved_link(event, args, context)
    return None


def moved_link(
    event: str, args: tuple[Any, ...], context: tuple[Any, ...], bound: tuple[Any, ...] = ()
) -> tuple[str, str] | None:
    """(kind, detail) for a link renamed or hard-linked so that it leads outside scratch (a relative link made
    leading inside leads elsewhere from another folder), or for a hard link through a link that leads outside
    (`os.link` follows links unless told not to; its event does not say); or None."""
    path_text, plain, resolved, entry_of, in_scratch, read_link, kind_of, count, number, failure = bound
    if not (event == "os.rename" or event == "os.link") or count(args) < 2:
        return None
    for index in (2, 3):
        folder: Any = plain(args[index]) if index < count(args) else None
        if kind_of(folder) is number and folder >= 0:
            return None  # relative to folders only the kernel knows
    source, destination = path_text(args[0])[0], path_text(args[1])[0]
    if source is None or destination is None:
        return None  # reported as given
    scratch = context[2]
    if event == "os.link" and not in_scratch(resolved(source), scratch):
        return "file_write", "os.link " + source[:100] + ", which leads outside scratch, to " + destination[:100]
    try:
        target = read_link(entry_of(source))
    except failure:
        return None  # not a link
    moved = entry_of(destination)
    if not in_scratch(resolved(target if target.startswith("/") else moved[: moved.rfind("/") + 1] + target), scratch):
        return "file_write", event + " moves a link to " + target[:100] + " to " + destination[
            :100
        ] + ", outside scratch"
    return None


SEALED = (
    resolved,
    entry_of,
    another_process,
    path_text,
    odd_path,
    in_scratch,
    descriptor_outside,
    classify_path,
    judge_open,
    classify_open,
    classify_database,
    uri_path,
    classify_change,
    moved_link,
)
