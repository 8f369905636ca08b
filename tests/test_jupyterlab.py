"""JupyterLab on 127.0.0.1: it lists the project's notebooks, saving one leaves it byte-identical,
and the first kernel websocket is accepted.

What JupyterLab 4.6 writes when it saves a notebook (jupyterlab/jupyterlab,
packages/notebook/src/panel.ts): once the kernel answers ``kernel_info``, the notebook panel calls
``_updateLanguage`` -> ``model.setMetadata('language_info', info.language_info)`` (the kernel's
whole ``language_info``, Python patch version included) and ``_updateSpec`` ->
``model.setMetadata('kernelspec', {name, display_name, language})`` from the kernel spec. Both
overwrite whatever the file had, but ``YNotebook.setMetadata`` (@jupyter/ydoc) returns early when
the new value is deep-equal to the old one, so a notebook committed in exactly that form is never
marked dirty and autosave never writes it. A save sends ``model.toJSON()`` (sources as strings) to
``PUT /api/contents``; the server writes it with ``nbformat.write`` (indent 1, sorted keys, sources
split into lines, ``ensure_ascii=False``, trailing newline). The tests below replay that: the server
is real, the browser side is the two ``setMetadata`` calls.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
import websocket  # websocket-client, a dependency of jupyter_server
from ipykernel.ipkernel import IPythonKernel
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"  # the kernel websocket protocol JupyterLab 4 uses
STARTUP_TIMEOUT = 60.0  # generous: a cold JupyterLab start takes a few seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lab_command(port: int, token: str, notebook_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--notebook-dir={notebook_dir}",
        "--ServerApp.open_browser=False", "--allow-root",  # CI machines run as root
    ]


def _lab_env(home: Path) -> dict[str, str]:
    return {"JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_CONFIG_DIR": str(home / "cfg"),
            "PATH": str(Path(sys.executable).parent), "HOME": str(home)}


def _nbformat_text(nb: nbformat.NotebookNode) -> str:
    """The text the Jupyter server writes for ``nb`` (FileContentsManager._save_notebook)."""
    buffer = io.StringIO()
    nbformat.write(nb, buffer, version=nbformat.NO_CONVERT)
    return buffer.getvalue()


@dataclass
class _Lab:
    """A running JupyterLab server: REST calls and kernel websockets with its token."""

    port: int
    token: str
    log: Path
    process: subprocess.Popen[bytes]

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def kernel_websocket(self, kernel_id: str) -> websocket.WebSocket:
        """Connect as JupyterLab does: /channels with a session id and the v1 subprotocol."""
        url = (f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels"
               f"?session_id={uuid.uuid4()}")
        return websocket.create_connection(
            url, header=[f"Authorization: token {self.token}"], subprotocols=[V1_PROTOCOL],
            timeout=60)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Lab]:
    """JupyterLab serving a copy of notebooks/ (saves must not touch the committed files)."""
    home = tmp_path_factory.mktemp("lab")
    notebook_dir = home / "notebooks"
    notebook_dir.mkdir()
    for path in NOTEBOOKS:
        shutil.copy2(path, notebook_dir / path.name)
    port, token, log = _free_port(), secrets.token_hex(16), home / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(_lab_command(port, token, notebook_dir), env=_lab_env(home),
                                   stdout=sink, stderr=subprocess.STDOUT)
    server = _Lab(port, token, log, process)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                server.api("GET", "/api/status")
                break
            except OSError:
                assert process.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
                time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def _kernel_info(ws: websocket.WebSocket) -> dict[str, Any]:
    """The kernel's kernel_info_reply content, asked over a v1-protocol kernel websocket."""
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": "test",
              "session": uuid.uuid4().hex, "date": "", "version": "5.4"}
    request = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}
    ws.send_binary(serialize_msg_to_ws_v1(request, "shell", pack=lambda d: json.dumps(d).encode()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        frame = ws.recv()
        if not isinstance(frame, bytes):
            continue
        channel, parts = deserialize_msg_from_ws_v1(frame)
        reply_header, parent_header, _, content = (json.loads(p) for p in parts[:4])
        if (channel == "shell" and reply_header["msg_type"] == "kernel_info_reply"
                and parent_header.get("msg_id") == msg_id):
            return content
    raise AssertionError("no kernel_info_reply within 60 s")


def _frontend_save(lab: _Lab, name: str) -> tuple[str, str]:
    """Open ``name`` with a kernel and save it as JupyterLab's notebook panel does.

    Returns the kernel's Python version and the text the server wrote.
    """
    model = lab.api("GET", f"/api/contents/{name}?type=notebook&content=1")
    notebook = model["content"]
    kernel_name = notebook["metadata"]["kernelspec"]["name"]
    session = lab.api("POST", "/api/sessions", {"path": name, "name": name, "type": "notebook",
                                                "kernel": {"name": kernel_name}})
    try:
        ws = lab.kernel_websocket(session["kernel"]["id"])
        try:
            info = _kernel_info(ws)
        finally:
            ws.close()
        spec = lab.api("GET", "/api/kernelspecs")["kernelspecs"][session["kernel"]["name"]]["spec"]
        # panel.ts: _updateLanguage and _updateSpec
        notebook["metadata"]["language_info"] = info["language_info"]
        notebook["metadata"]["kernelspec"] = {"name": session["kernel"]["name"],
                                              "display_name": spec["display_name"],
                                              "language": spec["language"]}
        for cell in notebook["cells"]:  # model.toJSON() holds each source as one string
            if isinstance(cell["source"], list):
                cell["source"] = "".join(cell["source"])
        lab.api("PUT", f"/api/contents/{name}",
                {"type": "notebook", "format": "json", "content": notebook})
    finally:
        lab.api("DELETE", f"/api/sessions/{session['id']}")
    saved = lab.api("GET", f"/api/contents/{name}?type=file&format=text&content=1")["content"]
    return info["language_info"]["version"], saved


@pytest.mark.slow
def test_jupyterlab_lists_the_notebooks_through_its_rest_api(lab: _Lab) -> None:
    listing = lab.api("GET", "/api/contents")
    served = {item["name"] for item in listing["content"] if item["type"] == "notebook"}
    assert NOTEBOOKS and served == {p.name for p in NOTEBOOKS}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_jupyterlab_save_leaves_the_notebook_byte_identical(lab: _Lab, path: Path) -> None:
    committed = path.read_text(encoding="utf-8")
    kernel_version, saved = _frontend_save(lab, path.name)
    committed_version = json.loads(committed)["metadata"].get("language_info", {}).get("version")
    expected = committed
    if committed_version is not None and kernel_version != committed_version:
        # JupyterLab writes the running Python's patch version; nothing committed can match
        # every 3.11.x, so on another patch version only that value may differ.
        warnings.warn(f"the kernel runs Python {kernel_version}, the notebooks record "
                      f"{committed_version}: opening them in JupyterLab rewrites that value",
                      stacklevel=1)
        nb = nbformat.reads(committed, as_version=nbformat.NO_CONVERT)
        nb.metadata.language_info.version = kernel_version
        expected = _nbformat_text(nb)
    assert saved == expected


@pytest.mark.slow
def test_the_first_kernel_websocket_is_accepted(lab: _Lab) -> None:
    kernel = lab.api("POST", "/api/kernels", {"name": "python3"})
    try:
        ws = lab.kernel_websocket(kernel["id"])  # at once, while the kernel is still starting
        try:
            assert ws.getstatus() == 101 and ws.getsubprotocol() == V1_PROTOCOL
            assert _kernel_info(ws)["status"] == "ok"
        finally:
            ws.close()
    finally:
        lab.api("DELETE", f"/api/kernels/{kernel['id']}")
    assert f"500 GET /api/kernels/{kernel['id']}/channels" not in lab.log.read_text()


@pytest.mark.slow
def test_a_dropped_kernel_websocket_handshake_leaves_the_kernel_usable(lab: _Lab) -> None:
    # The server answers a kernel websocket's handshake only once the kernel has replied to
    # kernel_info; a client that leaves before that (a tab reloaded while the kernel starts)
    # makes jupyter_server 2.x log "500 ... 'NoneType' object has no attribute
    # 'kernel_ws_protocol'" (jupyter-server/jupyter_server#1265, in every version JupyterLab 4.6
    # accepts, so no pin avoids it). The 500 goes to a client that is gone; the kernel is fine.
    kernel = lab.api("POST", "/api/kernels", {"name": "python3"})
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    handshake = (f"GET /api/kernels/{kernel['id']}/channels?session_id={uuid.uuid4()} HTTP/1.1\r\n"
                 f"Host: 127.0.0.1:{lab.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Protocol: {V1_PROTOCOL}\r\n"
                 f"Authorization: token {lab.token}\r\n\r\n")
    try:
        with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as raw:
            raw.sendall(handshake.encode())  # and leave before the answer
        ws = lab.kernel_websocket(kernel["id"])
        try:
            assert ws.getstatus() == 101 and _kernel_info(ws)["status"] == "ok"
        finally:
            ws.close()
    finally:
        lab.api("DELETE", f"/api/kernels/{kernel['id']}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_in_nbformat_canonical_serialisation(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text == _nbformat_text(nbformat.reads(text, as_version=nbformat.NO_CONVERT))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_metadata_is_what_jupyterlab_writes_for_the_project_kernel(path: Path) -> None:
    metadata = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    assert metadata["kernelspec"] == {"name": "python3", "display_name": "Python 3 (mtlrepro)",
                                      "language": "python"}  # Makefile's ipykernel install
    language_info = dict(metadata["language_info"])
    version = language_info.pop("version", None)
    expected = dict(IPythonKernel.language_info)
    expected.pop("version")
    assert language_info == expected
    assert isinstance(version, str)
    assert version.startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
