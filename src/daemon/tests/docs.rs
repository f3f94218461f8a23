//! docs/api.md describes exactly the API the daemon serves: every path and method of the
//! generated OpenAPI document has its `### \`METHOD /path\`` section, and every section names a
//! route that exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test code

use std::collections::BTreeSet;

use luminaguard_daemon::api::ApiDoc;
use utoipa::OpenApi;

#[test]
fn docs_api_md_lists_every_route_of_the_openapi_document_and_no_other() {
    let doc: serde_json::Value =
        serde_json::from_str(&ApiDoc::openapi().to_json().unwrap()).unwrap();
    let served: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md"),
    )
    .unwrap();
    let documented: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .filter_map(|l| l.strip_suffix('`'))
        .map(str::to_owned)
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in docs/api.md: {undocumented:?}; in docs/api.md but not served: {unserved:?}"
    );
}
