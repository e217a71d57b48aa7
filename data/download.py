"""Fetching datasets that are not on disk yet, with checksum verification."""

from pathlib import Path

from torchvision.datasets.utils import download_and_extract_archive, download_url

from data.common import DatasetError


def fetch(url: str, root: Path, md5: str, extract: bool, missing: str, how_to_get: str) -> None:
    """Download `url` into `root` (verifying its md5), extracting archives; on any failure raise a
    DatasetError that says what is missing and how to get it."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        if extract:
            download_and_extract_archive(url, str(root), md5=md5, remove_finished=True)
        else:
            download_url(url, str(root), md5=md5)
    except Exception as error:  # network, checksum and archive errors all mean the same to a user
        raise DatasetError(
            f"{missing}, and downloading {url} failed ({type(error).__name__}: {error}). "
            f"{how_to_get}"
        ) from error
