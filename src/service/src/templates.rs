//! Templates: snapshots of freshly booted Firecracker sandboxes, from which new ones are
//! restored instead of booted.
//!
//! They live in `<runtime root>/templates/<name>`: on the file system of the sandbox
//! directories and jail chroots, so each restore hard-links the snapshot's files instead of
//! copying guest memory (and restored VMs share its pages copy-on-write). Like the rest of the
//! runtime directory they do not survive a reboot (`/run` is a tmpfs); make them again.

use std::path::PathBuf;

use luminaguard_core::{BackendChoice, RuntimeDir};
use luminaguard_firecracker::Template;

use crate::{Action, Caller, CreateOptions, Service, ServiceError};

/// The directory of the runtime root that holds templates.
pub const TEMPLATES_DIR: &str = "templates";

/// Where template `name` lives; refuses a name that is not one plain, short component.
pub fn dir(runtime: &RuntimeDir, name: &str) -> Result<PathBuf, ServiceError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric);
    if !ok {
        return Err(ServiceError::InvalidSpec(format!(
            "template name {name:?}: use 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter \
             or digit"
        )));
    }
    Ok(runtime.root().join(TEMPLATES_DIR).join(name))
}

/// The template `name`, read and checked.
pub async fn open(runtime: &RuntimeDir, name: &str) -> Result<Template, ServiceError> {
    let dir = dir(runtime, name)?;
    if tokio::fs::symlink_metadata(&dir).await.is_err() {
        return Err(ServiceError::NotFound(format!(
            "no template named {name}: make it with `luminaguard template create {name}`"
        )));
    }
    Template::open(&dir)
        .await
        .map_err(|e| ServiceError::internal("reading the template", e))
}

impl Service {
    /// Boots a Firecracker sandbox for `opts`, snapshots it once its agent answers, and keeps
    /// the snapshot as template `name`; the sandbox itself is removed.
    pub async fn create_template(
        &self,
        caller: &Caller,
        name: &str,
        opts: &CreateOptions,
    ) -> Result<Template, ServiceError> {
        let action = Action::CreateTemplate {
            name: name.to_owned(),
        };
        self.admit(caller, &action).await?;
        let dest = dir(self.runtime(), name)?;
        if opts.pool.is_some() {
            return Err(ServiceError::InvalidSpec(
                "a template is made from a sandbox booted for it, not one from a pool".into(),
            ));
        }
        if opts.template.is_some() {
            return Err(ServiceError::InvalidSpec(
                "a template is made by booting: a template to restore from does not apply".into(),
            ));
        }
        let req = self.request(caller, opts).await?;
        if !matches!(
            req.spec.backend,
            BackendChoice::Auto | BackendChoice::Firecracker
        ) {
            return Err(ServiceError::InvalidSpec(format!(
                "templates are Firecracker snapshots: backend {} cannot make one",
                req.spec.backend
            )));
        }
        if tokio::fs::symlink_metadata(&dest).await.is_ok() {
            return Err(ServiceError::Conflict(format!(
                "template {name} exists: remove it first"
            )));
        }
        // `<runtime root>/templates`, made (or taken over) under the runtime directory's checks.
        luminaguard_backend::create_runtime_subdir(
            self.runtime(),
            TEMPLATES_DIR,
            luminaguard_backend::PRIVATE_DIR_MODE,
        )
        .await?;
        let backend = self
            .firecracker_for(&req.spec, opts.image.as_deref())
            .await?;
        Ok(backend.create_template(req, &dest).await?)
    }

    /// Every readable template, sorted by name (unreadable ones are logged and left out).
    pub async fn templates(
        &self,
        caller: &Caller,
    ) -> Result<Vec<(String, Template)>, ServiceError> {
        self.admit(caller, &Action::ListTemplates).await?;
        let base = self.runtime().root().join(TEMPLATES_DIR);
        let mut found = Vec::new();
        let mut entries = match tokio::fs::read_dir(&base).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(ServiceError::internal("reading the templates directory", e)),
            Ok(entries) => entries,
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| ServiceError::internal("reading the templates directory", e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            match Template::open(&entry.path()).await {
                Ok(t) => found.push((name, t)),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// Removes template `name` — or what a template create killed half-way left: any
    /// directory of that name under templates/, never a symbolic link's target. Sandboxes
    /// restored from it keep running.
    pub async fn remove_template(&self, caller: &Caller, name: &str) -> Result<(), ServiceError> {
        let action = Action::RemoveTemplate {
            name: name.to_owned(),
        };
        self.admit(caller, &action).await?;
        let dir = dir(self.runtime(), name)?;
        match tokio::fs::symlink_metadata(&dir).await {
            Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(&dir)
                .await
                .map_err(|e| ServiceError::internal("removing the template", e)),
            _ => Err(ServiceError::NotFound(format!("no template named {name}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn template_names_are_one_plain_component() {
        let rt = RuntimeDir::new("/run/luminaguard").unwrap();
        assert_eq!(
            dir(&rt, "py-3_12").unwrap(),
            PathBuf::from("/run/luminaguard/templates/py-3_12")
        );
        for bad in ["", "..", "a/b", "../x", "-x", "A", "x y", &"a".repeat(65)] {
            assert!(dir(&rt, bad).is_err(), "{bad:?}");
        }
    }
}
