"""Stage 1 — ingest: read a local file, an S3 object or the generator; write a parquet snapshot.

The snapshot file's sha256 is the data version, in place of DVC: it is the same
hash as the content-addressed key `kfct data push` stores the dataset under, travels
in artifact metadata and ends up on the model version.
"""

from pathlib import Path

from kfp.dsl import Dataset, Output


def ingest_core(data_uri: str, out_path: str | Path) -> dict:
    """Read `data_uri`, write it as parquet to `out_path`, return its lineage metadata.

    A pointer (`dataset://latest`) is resolved here, at run time, so a recurring or
    drift-triggered run ingests whatever the tag names now; the snapshot it resolved
    to is recorded (`resolved_uri`) and its sha256 is the data version.
    """
    from kfct.data.datasource import snapshot_file
    from kfct.data.datatags import resolve
    from kfct.errors import DataSourceError
    from kfct.governance.lineage import sha256_file

    out_path = Path(out_path)
    resolved, manifest = resolve(data_uri)
    shape = snapshot_file(resolved, out_path)  # a parquet source is never read whole
    digest = sha256_file(out_path)
    if manifest is not None and manifest["sha256"] != digest:
        raise DataSourceError(
            f"dataset pointer {data_uri!r} names sha256 {manifest['sha256']} but {resolved} has sha256 {digest}"
        )
    return {
        "source": data_uri,
        "resolved_uri": resolved,
        "rows": shape["rows"],
        "columns": shape["columns"],
        "column_names": shape["column_names"],
        "sha256": digest,
    }


def ingest_data(data_uri: str, dataset: Output[Dataset]) -> str:
    """Ingest the dataset (path, s3://, dataset://<tag> pointer or generate://) as a parquet snapshot; returns its sha256."""
    from kfct.runtime.stage import stage

    with stage("ingest-data", stamp=dataset.metadata, data_uri=data_uri) as st:
        from kfct.components.ingest import ingest_core

        log = st.log
        meta = ingest_core(data_uri, dataset.path)
        dataset.metadata.update({k: v for k, v in meta.items() if k != "column_names"})
        log.info(
            "snapshot of %s: %s rows x %s columns, sha256 %s", data_uri, meta.get("rows"), meta.get("columns"), meta["sha256"]
        )
        return meta["sha256"]
