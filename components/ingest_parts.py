"""Ingest for a dataset in parts: resolve the manifest and hand on part references, never the table.

- a parts location (a local directory, an `s3://.../<sha256>/` prefix, or a `dataset://` tag
  pointing at one): the manifest is checked and resolved (every part's absolute URI); the parts
  stay where they are;
- `generate://N?...&part_rows=K`: generated chunk by chunk straight into parts;
- one parquet file (local or S3): split into parts while reading it in batches; CSV is read
  with pyarrow's streaming reader.
Parts written here live in the stage's `part_files` artifact (a directory); their references are
`<artifact uri>/<sha256>.parquet`, which on a cluster is the artifact's object-store URI. The
`dataset` artifact holds only the resolved manifest.
The data version is the manifest's sha256 (kfct.data.parts).
"""

from __future__ import annotations

from pathlib import Path
from typing import get_type_hints
from urllib.parse import parse_qs, urlparse

from kfp.dsl import Dataset, Output


def _part_rows_of(uri: str, default: int) -> int:
    q = parse_qs(urlparse(uri).query)
    return int(q["part_rows"][-1]) if "part_rows" in q else default


def _csv_batches(path: Path):
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(path)
    yield from reader


def ingest_parts_core(data_uri: str, out_dir: str | Path, base_uri: str, part_rows: int) -> dict:
    """The resolved manifest (version + part URIs) for `data_uri`, writing parts into `out_dir` if needed.

    `out_dir/_manifest.json` is the resolved manifest in every case.
    """
    import tempfile

    from kfct.data import parts
    from kfct.data.datasource import DEFAULT_URI, parse_generate
    from kfct.data.datatags import resolve
    from kfct.errors import DataSourceError

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uri, pointer = resolve((data_uri or "").strip() or DEFAULT_URI)
    scheme = urlparse(uri).scheme
    if parts.is_parts(uri) or (scheme in ("", "file") and parts.is_parts(Path(urlparse(uri).path or uri))):
        loc = uri if scheme == "s3" else str(Path(urlparse(uri).path if scheme == "file" else uri).expanduser())
        manifest = parts.resolved(parts.load_manifest(loc), loc)
    else:
        part_rows = parts.check_part_rows(_part_rows_of(uri, part_rows))
        if scheme == "generate":
            from kfct.data.datagen import generate_chunks

            g = parse_generate(uri)
            written = parts.write_parts(
                generate_chunks(g["rows"], g["seed"], g["drift"], g["bias"], chunk_rows=part_rows), out, part_rows
            )
        else:
            with tempfile.TemporaryDirectory(prefix="kfct-ingest-") as tmp:
                if scheme == "s3":
                    from kfct.data import s3

                    src = s3.download(uri, Path(tmp) / Path(urlparse(uri).path).name)
                elif scheme in ("", "file"):
                    src = Path(urlparse(uri).path if scheme == "file" else uri).expanduser()
                else:
                    raise DataSourceError(f"unsupported dataset URI scheme {scheme!r} in {uri!r}")
                if not src.is_file():
                    raise DataSourceError(f"dataset not found: {src}")
                if src.suffix.lower() == ".csv":
                    written = parts.write_parts(_csv_batches(src), out, part_rows)
                else:
                    written = parts.split_parquet(src, out, part_rows)
        manifest = parts.resolved(written, base_uri)
    if pointer is not None and pointer["sha256"] != manifest["version"]:
        raise DataSourceError(
            f"dataset pointer {data_uri!r} names sha256 {pointer['sha256']} but {uri} has version {manifest['version']}"
        )
    parts.write_manifest(manifest, out / parts.MANIFEST)
    manifest["resolved_uri"] = uri
    return manifest


def ingest_parts(data_uri: str, part_rows: int, dataset: Output[Dataset], part_files: Output[Dataset]) -> list:
    """Ingest a dataset as parts: `dataset` is the resolved manifest, `part_files` holds parts written here
    (when the source was not in parts already); returns the part URIs (the fan-out's items)."""
    from kfct.runtime.stage import stage

    with stage("ingest-parts", stamp=dataset.metadata, data_uri=data_uri) as st:
        import shutil
        from pathlib import Path
        from urllib.parse import urlparse

        from kfct.components.ingest_parts import ingest_parts_core
        from kfct.data import parts

        remote = urlparse(part_files.uri).scheme in ("s3", "minio", "gs")
        manifest = ingest_parts_core(data_uri, part_files.path, part_files.uri if remote else part_files.path, part_rows)
        # the manifest alone in `dataset`: a consumer of it downloads kilobytes, never the parts
        Path(dataset.path).mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(part_files.path) / parts.MANIFEST), str(Path(dataset.path) / parts.MANIFEST))
        names = [f["name"] for f in manifest["schema"]]
        dataset.metadata.update(
            {
                "source": data_uri,
                "resolved_uri": manifest["resolved_uri"],
                "rows": manifest["rows"],
                "columns": len(names),
                "sha256": manifest["version"],
                "parts": len(manifest["parts"]),
            }
        )
        st.log.info(
            "dataset %s: %s rows in %d parts, version %s", data_uri, manifest["rows"], len(manifest["parts"]), manifest["version"]
        )
        return [p["uri"] for p in manifest["parts"]]


# Postponed annotations: kfp reads the signature, so give it the real types.
ingest_parts.__annotations__ = get_type_hints(ingest_parts, include_extras=True)
