"""Push a fused model folder to the Hugging Face Hub (``mlx-tune upload FOLDER REPO_ID``).

The folder goes up as it is, with our model card (``mlx_lm upload`` would replace the card's text
with its own) and ``tools.json``: ``HfApi.create_repo`` (``exist_ok``) then ``upload_folder``.
Needs a token (``hf auth login`` or ``HF_TOKEN``) and the network; without either it stops with one
line saying so.
"""

from __future__ import annotations

from pathlib import Path

from mlx_tune import UserError

REQUIRED = ("config.json", "README.md")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def upload(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Create ``repo_id`` (a model repository) if needed and upload ``folder``; return its URL."""
    import huggingface_hub as hub

    folder = Path(folder)
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"FOLDER: {folder} has no {', '.join(missing)} (upload a folder made by `mlx-tune fuse`)"
        )
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"REPO_ID: {repo_id!r} is not of the form owner/name")
    token = token or hub.get_token()
    if not token:
        raise UserError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then upload again")
    api = hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"Upload {folder.name} (mlx-tune)",
        )
    except Exception as e:  # HTTP errors, no network, refused token: all end the command the same way
        raise UserError(f"upload to {repo_id} failed: {_first_line(e)}") from None
    return str(url)
