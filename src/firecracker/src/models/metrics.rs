//! `PUT /metrics`: `Metrics`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the VMM writes its JSON metrics (one object per flush).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_path_is_required() {
        let m = Metrics {
            metrics_path: "/run/s/metrics.json".into(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"metrics_path":"/run/s/metrics.json"}"#
        );
        assert!(serde_json::from_str::<Metrics>("{}").is_err());
    }
}
