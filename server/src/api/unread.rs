//! A request body the answer did not wait for. When a handler answers before reading the
//! body (a path the router refuses, a caller refused before its body is parsed, a body over
//! the limit), hyper tries to read the rest after the response; if it has not all arrived
//! yet (over TLS it comes in records of its own, after the answer) hyper closes the
//! connection, after having written a response that promised keep-alive, and the client's
//! next request on it meets EOF (issue 26, defect 8). So the body is watched, and an answer
//! given while any of it is unread says `Connection: close`: the client opens a new
//! connection instead of reusing a dying one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, header};
use axum::response::Response;

/// A body that records when its end was read.
struct Watched {
    inner: Body,
    ended: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: answers given with part of the request body unread close the connection.
pub(super) async fn close_if_unread(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let ended = Arc::new(AtomicBool::new(body.is_end_stream()));
    let watched = Watched {
        inner: body,
        ended: ended.clone(),
    };
    let req = axum::extract::Request::from_parts(parts, Body::new(watched));
    let mut resp = next.run(req).await;
    if !ended.load(Ordering::Acquire) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
