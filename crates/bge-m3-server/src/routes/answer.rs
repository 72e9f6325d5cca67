//! Answers written as their client takes them: a JSON document produced in pieces (an item, a
//! ColBERT row) and serialized [`CHUNK`] bytes at a time, only when the connection asks for
//! more. An answer therefore holds its embeddings (4 bytes a value) and one chunk, never the
//! whole JSON text (some 12 bytes a value) nor a copy of it in the connection's write buffer;
//! and what it holds shrinks as it is written, however slowly its client reads. Its memory
//! reservation is given back when the last piece is written, or when the connection goes.
//!
//! An answer of at most [`SMALL`] bytes is written at once, with a `Content-Length`; a larger
//! one is sent with `Transfer-Encoding: chunked`.

use std::convert::Infallible;
use std::iter::once;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::ContentType;
use actix_web::web::Bytes;
use actix_web::HttpResponse;
use serde::Serialize;

use crate::inference::memory::Reservation;

/// The pieces of one JSON document, in order.
pub(crate) type Pieces = Box<dyn Iterator<Item = Vec<u8>>>;

/// Bytes serialized per chunk of a streamed answer.
pub(crate) const CHUNK: usize = 64 << 10;

/// Answers this long or shorter are written at once, with a `Content-Length`.
pub(crate) const SMALL: usize = 256 << 10;

/// A 200 JSON answer made of `pieces`; `reservation` is given back once it is written (at once
/// for a small answer).
pub(crate) fn respond(mut pieces: Pieces, reservation: Option<Reservation>) -> HttpResponse {
    let mut first = Vec::new();
    for piece in pieces.by_ref() {
        first.extend_from_slice(&piece);
        if first.len() > SMALL {
            return HttpResponse::Ok()
                .content_type(ContentType::json())
                .body(Streamed {
                    first: Some(first),
                    pieces,
                    reservation,
                });
        }
    }
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(first)
}

/// The body of a large answer.
struct Streamed {
    /// What [`respond`] serialized before it knew the answer was large.
    first: Option<Vec<u8>>,
    pieces: Pieces,
    reservation: Option<Reservation>,
}

impl MessageBody for Streamed {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let mut chunk = this.first.take().unwrap_or_default();
        if chunk.len() < CHUNK {
            chunk.reserve(CHUNK);
            for piece in this.pieces.by_ref() {
                chunk.extend_from_slice(&piece);
                if chunk.len() >= CHUNK {
                    break;
                }
            }
        }
        if chunk.is_empty() {
            // Written: the embeddings are gone, and so is their reservation.
            this.pieces = Box::new(std::iter::empty());
            this.reservation = None;
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Bytes::from(chunk))))
    }
}

/// One value as JSON.
pub(crate) fn value<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("answers serialize: their map keys are strings")
}

/// A JSON array whose elements are each written in pieces.
pub(crate) fn array_of<E, P>(elements: E) -> impl Iterator<Item = Vec<u8>>
where
    E: Iterator<Item = P>,
    P: Iterator<Item = Vec<u8>>,
{
    let mut first = true;
    once(b"[".to_vec())
        .chain(elements.flat_map(move |element| {
            let comma = (!std::mem::replace(&mut first, false)).then(|| b",".to_vec());
            comma.into_iter().chain(element)
        }))
        .chain(once(b"]".to_vec()))
}

/// A JSON array of values, each serialized when its turn comes.
pub(crate) fn array<T: Serialize>(
    values: impl Iterator<Item = T>,
) -> impl Iterator<Item = Vec<u8>> {
    array_of(values.map(|v| once(value(&v))))
}

/// A JSON object whose fields are each written in pieces, in order.
pub(crate) fn object(fields: Vec<(&'static str, Pieces)>) -> impl Iterator<Item = Vec<u8>> {
    let mut first = true;
    once(b"{".to_vec())
        .chain(fields.into_iter().flat_map(move |(key, pieces)| {
            let mut head = Vec::with_capacity(key.len() + 4);
            if !std::mem::replace(&mut first, false) {
                head.push(b',');
            }
            head.extend_from_slice(&value(key));
            head.push(b':');
            once(head).chain(pieces)
        }))
        .chain(once(b"}".to_vec()))
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use serde_json::json;

    use super::*;
    use crate::inference::memory::{MemoryBudget, Need};

    fn text(pieces: impl Iterator<Item = Vec<u8>>) -> String {
        String::from_utf8(pieces.flatten().collect()).unwrap()
    }

    #[test]
    fn pieces_make_the_same_json_as_serde() {
        let rows = vec![vec![1.0f32, -0.5], vec![0.25, 2.0]];
        let written = text(object(vec![
            ("a", Box::new(array(rows.clone().into_iter()))),
            ("empty", Box::new(array(std::iter::empty::<u8>()))),
            (
                "nested",
                Box::new(array_of(
                    vec![rows.clone(), vec![]]
                        .into_iter()
                        .map(|rows| array(rows.into_iter())),
                )),
            ),
            ("s", Box::new(once(value("x\"y")))),
        ]));
        let expected = json!({"a": rows, "empty": [], "nested": [rows, []], "s": "x\"y"});
        assert_eq!(written, serde_json::to_string(&expected).unwrap());
        assert_eq!(text(object(vec![])), "{}");
    }

    #[actix_web::test]
    async fn small_answers_are_sized_and_large_ones_streamed_in_chunks() {
        let small = respond(Box::new(once(value(&json!({"a": 1})))), None);
        assert_eq!(small.body().size(), BodySize::Sized(7));

        let budget = MemoryBudget::new(1 << 30);
        let reservation = budget.reserve(10 << 20, Need::Answer).unwrap();
        let rows: Vec<Vec<f32>> = (0..20_000).map(|i| vec![i as f32; 8]).collect();
        let expected = serde_json::to_vec(&rows).unwrap();
        let large = respond(Box::new(array(rows.into_iter())), Some(reservation));
        assert_eq!(large.body().size(), BodySize::Stream);
        assert_eq!(budget.in_use(), 10 << 20, "reservation while unwritten");
        let body = to_bytes(large.into_body()).await.unwrap();
        assert_eq!(body, expected);
        assert_eq!(budget.in_use(), 0, "given back once written");
    }
}
