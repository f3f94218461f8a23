//! `PUT /logger`: `Logger`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Firecracker's log level (its values are case-insensitive; these are the swagger's spellings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

/// Where and how the VMM logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// A file or named pipe for the human-readable log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only log messages from this module path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_fields_are_the_swaggers() {
        let l = Logger {
            log_path: Some("/run/s/firecracker.log".into()),
            level: Some(LogLevel::Warning),
            show_level: Some(true),
            show_log_origin: Some(false),
            module: None,
        };
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            serde_json::json!({
                "log_path": "/run/s/firecracker.log",
                "level": "Warning",
                "show_level": true,
                "show_log_origin": false,
            })
        );
        assert!(serde_json::from_str::<Logger>(r#"{"log_file":"/x"}"#).is_err());
        assert!(serde_json::from_str::<Logger>(r#"{"level":"Verbose"}"#).is_err());
    }
}
