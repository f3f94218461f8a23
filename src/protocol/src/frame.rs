//! Framing: every message travels as one length-prefixed frame.
//!
//! ```text
//! +-------------+-------------+----------------------+-------------------------------+
//! | len: u32 LE | id: u64 LE  | header: postcard(T)  | trailer: raw bytes (optional) |
//! +-------------+-------------+----------------------+-------------------------------+
//!   len counts id + header + trailer, so len >= 8 and len <= max_frame_len
//! ```
//!
//! The header is the postcard encoding of the message. Messages that carry bulk data (stdin, file
//! contents, output: [`Message::trailer`]) leave that data out of the header and carry it as the
//! frame's *trailer*, everything after the header up to the end of the frame. Postcard is
//! self-delimiting, so the decoder knows where the header ends. This keeps bulk bytes out of the
//! serializer on both sides: the sender writes header and trailer with one vectored write (no
//! copy into a frame buffer), the receiver hands the trailer on as a [`Bytes`] slice of its read
//! buffer (no copy into a `Vec`).
//!
//! The decoder rejects a length over the limit *before* buffering its payload, so a hostile peer
//! cannot make us allocate more than `max_frame_len`. A frame whose header does not decode (an
//! unknown message type, garbage) or that has a trailer its message type does not take is
//! reported as [`Incoming::Malformed`] with its id, and decoding continues with the next frame:
//! the length prefix keeps the stream in sync. A bad length is fatal ([`FrameError`]): there is
//! no way to find the next frame.

use std::io;
use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

/// Bytes before the payload: length and id.
pub const HEADER_LEN: usize = 12;
const LEN_LEN: usize = 4;
const ID_LEN: usize = 8;
/// Default and hard maximum of `len` (id + payload): 4 MiB.
pub const MAX_FRAME_LEN: usize = 4 << 20;
/// Largest data chunk (stdout, stdin, file data) a sender puts in one frame: 1 MiB, well under
/// [`MAX_FRAME_LEN`] with room for the envelope.
pub const MAX_CHUNK: usize = 1 << 20;
/// Frames at least this large are read into buffers the decoder recycles (see
/// [`FrameCodec::make_room`]); after one, it makes room for another as large right away, so the
/// next bulk frame is read into one buffer instead of growing (and copying) a small one.
const RECYCLE_MIN: usize = 64 << 10;
/// Bytes of recycled read buffers a decoder keeps at most.
const RECYCLE_MAX_BYTES: usize = 8 << 20;

/// One message and the stream it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T> {
    pub id: u64,
    pub body: T,
}

impl<T> Frame<T> {
    pub fn new(id: u64, body: T) -> Self {
        Self { id, body }
    }
}

/// What the decoder yields: a frame, or a frame whose payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<T> {
    Frame(Frame<T>),
    Malformed { id: u64, error: String },
}

/// Fatal framing errors: the connection cannot continue after any of these.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame announced a length over the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// A frame announced a length too short to hold its id.
    #[error("frame length {0} is shorter than the {ID_LEN}-byte id")]
    TooShort(usize),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame: {have} of {need} bytes received")]
    Truncated { have: usize, need: usize },
    /// A message could not be encoded (only a message over the size limit can cause this).
    #[error("cannot encode {kind} message: {reason}")]
    Encode { kind: &'static str, reason: String },
    #[error("connection I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// Decodes frames of `In`, encodes frames of `Out`. Use `()` for a direction not used.
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    max_frame_len: usize,
    /// Read buffers that held bulk frames, each as an empty handle on its allocation: once no
    /// frame from it is alive any more, the next bulk frame is read into it again — no fresh
    /// allocation, no page faults, for as long as a transfer lasts.
    recycled: Vec<Recycled>,
    _types: PhantomData<fn(Out) -> In>,
}

/// An empty handle on a read buffer's allocation, which keeps it alive for reuse.
#[derive(Debug)]
struct Recycled {
    anchor: BytesMut,
    size: usize,
}

impl<In, Out> Clone for FrameCodec<In, Out> {
    fn clone(&self) -> Self {
        Self::with_max_frame_len(self.max_frame_len)
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec with a lower limit than [`MAX_FRAME_LEN`] (the limit never exceeds it).
    pub fn with_max_frame_len(max: usize) -> Self {
        Self {
            max_frame_len: max.clamp(ID_LEN, MAX_FRAME_LEN),
            recycled: Vec::new(),
            _types: PhantomData,
        }
    }

    /// Makes `src` able to hold a frame of `total` bytes (the start of which it may hold
    /// already) without growing. A bulk-sized frame gets a buffer of its own, recycled if one is
    /// free, so that handing the frame on as `Bytes` slices never pins a buffer still being read
    /// into.
    fn make_room(&mut self, src: &mut BytesMut, total: usize) {
        if src.capacity() >= total {
            return;
        }
        if total < RECYCLE_MIN {
            src.reserve(total - src.len());
            return;
        }
        let free = self
            .recycled
            .iter_mut()
            .find_map(|r| r.anchor.try_reclaim(total).then_some(&mut r.anchor));
        let mut fresh = match free {
            Some(anchor) => anchor.split_off(0),
            None => {
                let mut fresh = BytesMut::with_capacity(total);
                let kept: usize = self.recycled.iter().map(|r| r.size).sum();
                if kept + total <= RECYCLE_MAX_BYTES {
                    self.recycled.push(Recycled {
                        anchor: fresh.split_to(0),
                        size: total,
                    });
                }
                fresh
            }
        };
        fresh.extend_from_slice(src);
        *src = fresh;
    }

    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

impl<In: DeserializeOwned + Message, Out> Decoder for FrameCodec<In, Out> {
    type Item = Incoming<In>;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        if src.len() < LEN_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len < ID_LEN {
            return Err(FrameError::TooShort(len));
        }
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        let total = LEN_LEN + len;
        if src.len() < total {
            self.make_room(src, total);
            return Ok(None);
        }
        // The frame leaves the read buffer without a copy; a trailer stays a slice of it.
        let frame = src.split_to(total).freeze();
        if total >= RECYCLE_MIN {
            // Bulk frames come in runs: make the next one land in a buffer of its own.
            self.make_room(src, total);
        }
        let mut id_bytes = [0u8; ID_LEN];
        id_bytes.copy_from_slice(&frame[LEN_LEN..HEADER_LEN]);
        let id = u64::from_le_bytes(id_bytes);
        let item = match postcard::take_from_bytes::<In>(&frame[HEADER_LEN..]) {
            Ok((body, [])) => Incoming::Frame(Frame { id, body }),
            Ok((mut body, rest)) => {
                let trailer = frame.slice(total - rest.len()..);
                match body.set_trailer(trailer) {
                    Ok(()) => Incoming::Frame(Frame { id, body }),
                    Err(trailer) => Incoming::Malformed {
                        id,
                        error: format!(
                            "{} trailing bytes after a {} message, which carries none",
                            trailer.len(),
                            body.kind()
                        ),
                    },
                }
            }
            Err(e) => Incoming::Malformed {
                id,
                error: format!("undecodable payload: {e}"),
            },
        };
        Ok(Some(item))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        match self.decode(buf)? {
            Some(item) => Ok(Some(item)),
            None if buf.is_empty() => Ok(None),
            None => {
                let need = if buf.len() >= LEN_LEN {
                    LEN_LEN + u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
                } else {
                    HEADER_LEN
                };
                let have = buf.len();
                buf.advance(have);
                Err(FrameError::Truncated { have, need })
            }
        }
    }
}

/// Lets postcard serialize straight into the output buffer.
struct BufFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BufFlavor<'_> {
    type Output = ();
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// What the codec needs to know about a message type beyond its serde encoding.
pub trait Message {
    /// Short name for logs and errors.
    fn kind(&self) -> &'static str;
    /// The bulk data this message carries as its frame's trailer, if it is a kind that carries
    /// any (its serde encoding then leaves the data out).
    fn trailer(&self) -> Option<&Bytes>;
    /// Gives a just-decoded message the trailer of its frame; hands the trailer back if this
    /// kind of message carries none.
    fn set_trailer(&mut self, trailer: Bytes) -> Result<(), Bytes>;
}

impl Message for () {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn trailer(&self) -> Option<&Bytes> {
        None
    }
    fn set_trailer(&mut self, trailer: Bytes) -> Result<(), Bytes> {
        Err(trailer)
    }
}

impl<In, Out: Serialize + Message> Encoder<Frame<Out>> for FrameCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame<Out>, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(frame.id, &frame.body, dst, self.max_frame_len)
    }
}

/// Appends one whole frame (header and trailer) to `dst`; on error `dst` is left as it was.
/// This copies the trailer; senders of bulk data use [`encode_frame_parts`] instead.
pub fn encode_frame<T: Serialize + Message>(
    id: u64,
    body: &T,
    dst: &mut BytesMut,
    max_frame_len: usize,
) -> Result<(), FrameError> {
    let trailer = encode_frame_parts(id, body, dst, max_frame_len)?;
    dst.extend_from_slice(&trailer);
    Ok(())
}

/// Appends the start of one frame — length, id and postcard header — to `dst` and returns the
/// trailer that completes it (empty for messages without one), which the caller writes right
/// after without copying it. On error `dst` is left as it was.
pub fn encode_frame_parts<T: Serialize + Message>(
    id: u64,
    body: &T,
    dst: &mut BytesMut,
    max_frame_len: usize,
) -> Result<Bytes, FrameError> {
    let start = dst.len();
    dst.put_u32_le(0);
    dst.put_u64_le(id);
    if let Err(e) = postcard::serialize_with_flavor(body, BufFlavor(dst)) {
        dst.truncate(start);
        return Err(FrameError::Encode {
            kind: body.kind(),
            reason: e.to_string(),
        });
    }
    let trailer = body.trailer().cloned().unwrap_or_default();
    let len = dst.len() - start - LEN_LEN + trailer.len();
    if len > max_frame_len {
        dst.truncate(start);
        return Err(FrameError::Encode {
            kind: body.kind(),
            reason: format!("{len} bytes exceeds the {max_frame_len}-byte frame limit"),
        });
    }
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: max_frame_len,
    })?;
    dst[start..start + LEN_LEN].copy_from_slice(&len.to_le_bytes());
    Ok(trailer)
}

/// Runs the request decoder over arbitrary bytes, as the fuzz target and its regression corpus
/// do: decodes until the input is used up or a fatal error, then applies end-of-input handling.
/// Panics only if the decoder itself breaks an invariant.
#[doc(hidden)]
pub fn fuzz_decode_all(data: &[u8]) {
    let mut codec = FrameCodec::<crate::message::Request, ()>::with_max_frame_len(64 << 10);
    let mut buf = BytesMut::from(data);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let _ = codec.decode_eof(&mut buf);
                return;
            }
            Err(_) => return,
        }
    }
}
