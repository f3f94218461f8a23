//! The wire formats against recorded-style fixtures, the requests built from a conversation, and
//! properties of the stream decoders (chunk boundaries, arbitrary bytes, bounded memory).

mod common;
mod fixtures;
mod props;
mod requests;
