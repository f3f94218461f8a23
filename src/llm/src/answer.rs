//! What the non-streamed answers of the providers with an error body have in common: an error
//! body first (the provider's error), else the answer itself.

use serde::de::DeserializeOwned;

use crate::error::LlmError;
use crate::model::{Provider, Turn};

/// A provider's error body: `{error: {type, message, ...}}` in its own shape.
pub(crate) trait ErrorBody: DeserializeOwned {
    /// The error's type, when the body gives one, and its message.
    fn into_parts(self) -> (Option<String>, String);
}

/// Parses `provider`'s non-streamed answer body (HTTP 200) into a [`Turn`]: its error body,
/// when it is one, is [`LlmError::Provider`]; else the answer `A`, made a turn by `into_turn`;
/// a body that is neither is [`LlmError::Malformed`].
pub(crate) fn parse<E: ErrorBody, A: DeserializeOwned>(
    provider: Provider,
    body: &[u8],
    into_turn: impl FnOnce(A) -> Result<Turn, LlmError>,
) -> Result<Turn, LlmError> {
    if let Ok(error) = serde_json::from_slice::<E>(body) {
        let (kind, message) = error.into_parts();
        return Err(LlmError::Provider {
            provider,
            kind,
            message,
        });
    }
    let answer = serde_json::from_slice::<A>(body).map_err(|e| LlmError::Malformed {
        provider,
        what: "answer",
        detail: e.to_string(),
    })?;
    into_turn(answer)
}
