//! Auditors: the latest checkpoint, raw entries, proofs and the export bundle, streamed.

use super::ErrorCode;
use super::caller::Reader;
use super::{ApiError, ApiResult, AppState, ErrorBody, read, snapshot};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ledger::store::Snapshot;
use serde::Deserialize;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------
// Auditors

/// The latest signed checkpoint: a C2SP signed note (docs/FORMAT.md §5), with the witnesses'
/// cosignatures when it has been witnessed (config `witnessing`).
#[utoipa::path(get, path = "/v1/ledger/checkpoint", tag = "auditors",
    responses((status = 200, description = "the note", content_type = "text/plain", body = String),
        (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn checkpoint(State(state): State<AppState>, _: Reader) -> ApiResult<Response> {
    let (size, note) = read(&state, |snap| {
        snap.latest_checkpoint()
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("no checkpoint yet"))
    })
    .await?;
    let note = match witnessed(&state) {
        Some(w) if w.size == size => w.note,
        _ => note,
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

fn witnessed(state: &AppState) -> Option<crate::witnessing::Witnessed> {
    state
        .shared
        .witnessed
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// The latest checkpoint witnesses cosigned, with their cosignatures (C2SP
/// tlog-cosignature lines after the log's signature): what a client that requires witnesses
/// checks. 404 before the first, or without `witnessing` in the config.
#[utoipa::path(get, path = "/v1/ledger/checkpoint/witnessed", tag = "auditors",
    responses((status = 200, description = "the cosigned note", content_type = "text/plain", body = String),
        (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn checkpoint_witnessed(
    State(state): State<AppState>,
    _: Reader,
) -> ApiResult<Response> {
    let w = witnessed(&state).ok_or_else(|| ApiError::not_found("no checkpoint witnessed yet"))?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        w.note,
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RangeQuery {
    /// First seq.
    from: u64,
    /// End seq, exclusive (default: the log's size).
    to: Option<u64>,
    /// Seconds to wait, when the log holds no entry at `from` yet, for a commit that adds
    /// one (a long poll, capped at `limits.long_poll_secs`; a follower's tail). Default 0.
    #[serde(default)]
    wait: Option<u64>,
}

/// Streams blocking-produced chunks as a response body.
pub(super) fn stream_body(
    state: &AppState,
    content_type: &'static str,
    produce: impl FnOnce(Snapshot, &mut ChunkWriter) -> Result<(), String> + Send + 'static,
) -> ApiResult<Response> {
    let snap = snapshot(state)?;
    let size = snap.size();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let result = produce(snap, &mut w).and_then(|()| w.flush_chunk());
        if let Err(e) = result {
            // The status line is gone already: cut the stream so the client sees an error.
            let _ = w.tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let stream = tokio_stream(rx);
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            // Which log the stream reflects: a follower knows the checkpoint to ask for.
            (
                header::HeaderName::from_static("x-ledger-size"),
                size.to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

pub(super) const CHUNK: usize = 64 * 1024;

/// A `Write` that sends 64 KiB chunks to the response body.
#[derive(Debug)]
pub(super) struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| "client went away".to_string())
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush_chunk().map_err(std::io::Error::other)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn tokio_stream(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A long poll's wait: with `wait` seconds (capped at `limits.long_poll_secs`), until the log
/// holds an entry at `from`. A commit bumps `committed` after the data is durable and
/// readable.
async fn wait_beyond(state: &AppState, from: u64, wait: Option<u64>) {
    if let Some(secs) = wait.filter(|s| *s > 0) {
        let cap = std::time::Duration::from_secs(secs.min(state.limits.long_poll_secs));
        let mut committed = state.shared.committed.subscribe();
        let _ = tokio::time::timeout(cap, committed.wait_for(|size| *size > from)).await;
    }
}

/// Raw entries `[from, to)`, streamed: `u32be len` then the stored bytes, per entry
/// (docs/FORMAT.md §9a).
#[utoipa::path(get, path = "/v1/ledger/entries", tag = "auditors", params(RangeQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn entries(
    State(state): State<AppState>,
    _: Reader,
    query: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))?;
    wait_beyond(&state, q.from, q.wait).await;
    stream_body(&state, "application/octet-stream", move |snap, w| {
        use std::io::Write as _;
        let to = q.to.unwrap_or(snap.size()).min(snap.size());
        for stored in snap.rows(q.from..to).map_err(|e| e.to_string())? {
            let stored = stored.map_err(|e| e.to_string())?;
            let bytes = stored.bytes();
            // Framing: u32 big-endian length, then the entry's stored bytes (FORMAT.md §9).
            let len = u32::try_from(bytes.len()).expect("entries are far below 4 GiB");
            w.write_all(&len.to_be_bytes())
                .and_then(|()| w.write_all(bytes))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct BatchesQuery {
    /// The first batch's first seq: the log's size after a batch (a checkpoint's size).
    from: u64,
    /// Seconds to wait, when the log holds nothing at `from` yet, for a commit that adds a
    /// batch (a long poll, capped at `limits.long_poll_secs`). Default 0.
    #[serde(default)]
    wait: Option<u64>,
}

/// Entries in one answer of `/v1/ledger/batches` at most (whole batches: one batch larger
/// than this comes alone).
const BATCHES_ENTRIES: usize = 50_000;

/// Whole batches from `from` on, each with the checkpoint note the writer signed for it
/// (docs/FORMAT.md §9h): what failover followers and standbys follow the writer with, so
/// that their logs are the writer's batch for batch. At most about 50,000 entries per
/// answer; ask again from the size reached.
#[utoipa::path(get, path = "/v1/ledger/batches", tag = "auditors", params(BatchesQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn batches(
    State(state): State<AppState>,
    _: Reader,
    query: Result<Query<BatchesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))?;
    let from = q.from;
    wait_beyond(&state, from, q.wait).await;
    let starts_batch = read(&state, move |snap| {
        Ok(from == 0 || (from <= snap.size() && snap.checkpoint(from).ok().flatten().is_some()))
    })
    .await?;
    if !starts_batch {
        return Err(ApiError::new(
            ErrorCode::BadQuery,
            format!("from={from} is not where a batch starts (a checkpoint's size)"),
        ));
    }
    stream_body(&state, "application/octet-stream", move |snap, w| {
        use std::io::Write as _;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut sent = 0;
        for stored in snap.rows(from..snap.size()).map_err(|e| e.to_string())? {
            let stored = stored.map_err(|e| e.to_string())?;
            batch.push(stored.bytes().to_vec());
            if !stored.ends_batch() {
                continue;
            }
            let note = snap
                .checkpoint(stored.seq() + 1)
                .map_err(|e| e.to_string())?
                .ok_or("a batch's last row without its checkpoint")?;
            // Framing: u32be note length, the note, u32be entry count, then per entry u32be
            // length and its stored bytes.
            let mut out = Vec::new();
            out.extend_from_slice(&(note.len() as u32).to_be_bytes());
            out.extend_from_slice(note.as_bytes());
            out.extend_from_slice(&(batch.len() as u32).to_be_bytes());
            for e in &batch {
                out.extend_from_slice(&(e.len() as u32).to_be_bytes());
                out.extend_from_slice(e);
            }
            w.write_all(&out).map_err(|e| e.to_string())?;
            sent += batch.len();
            batch.clear();
            if sent >= BATCHES_ENTRIES {
                break;
            }
        }
        Ok(())
    })
}

/// The whole log as a bundle (docs/FORMAT.md §8), streamed.
#[utoipa::path(get, path = "/v1/ledger/export", tag = "auditors",
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn export(State(state): State<AppState>, _: Reader) -> ApiResult<Response> {
    stream_body(&state, "application/octet-stream", |snap, w| {
        snap.export(w, |_| {})
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct InclusionQuery {
    /// The entry.
    seq: u64,
    /// The tree size (default: the latest checkpoint's).
    #[serde(default)]
    size: Option<u64>,
}

/// Answers a proof request from a snapshot: the proof file, or 422 saying why not.
pub(super) async fn proof(
    state: &AppState,
    make: impl FnOnce(&Snapshot) -> Result<String, ledger::store::ProofError> + Send + 'static,
) -> ApiResult<Response> {
    let text = read(state, move |snap| {
        make(&snap).map_err(|e| ApiError::new(ErrorCode::BadProofRequest, e.to_string()))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

/// An inclusion proof file (docs/FORMAT.md §9).
#[utoipa::path(get, path = "/v1/ledger/proof/inclusion", tag = "auditors", params(InclusionQuery),
    responses((status = 200, content_type = "application/json", body = Object),
        (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn proof_inclusion(
    State(state): State<AppState>,
    _: Reader,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))?;
    proof(&state, move |snap| {
        Ok(snap.inclusion_proof(q.seq, q.size)?.to_json())
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ConsistencyQuery {
    /// The older tree size.
    from: u64,
    /// The newer tree size.
    to: u64,
}

/// A consistency proof file (docs/FORMAT.md §9).
#[utoipa::path(get, path = "/v1/ledger/proof/consistency", tag = "auditors", params(ConsistencyQuery),
    responses((status = 200, content_type = "application/json", body = Object),
        (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn proof_consistency(
    State(state): State<AppState>,
    _: Reader,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))?;
    proof(&state, move |snap| {
        Ok(snap.consistency_proof(q.from, q.to)?.to_json())
    })
    .await
}
