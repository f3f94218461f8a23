//! `PUT /boot-source`: `BootSource`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::boot_args::KernelArgs;

/// The guest kernel, its command line and initrd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// The uncompressed ELF `vmlinux` (x86_64).
    pub kernel_image_path: PathBuf,
    /// The kernel command line, built from typed parts and checked for Firecracker's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<KernelArgs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot_args::KernelArgs;

    #[test]
    fn serializes_with_swagger_names_and_refuses_unknown_fields() {
        let body = BootSource {
            kernel_image_path: "/img/vmlinux".into(),
            boot_args: Some(
                KernelArgs::new()
                    .param("console", "ttyS0")
                    .unwrap()
                    .flag("quiet")
                    .unwrap(),
            ),
            initrd_path: Some("/img/initramfs.cpio".into()),
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kernel_image_path": "/img/vmlinux",
                "boot_args": "console=ttyS0 quiet",
                "initrd_path": "/img/initramfs.cpio",
            })
        );
        assert_eq!(serde_json::from_value::<BootSource>(json).unwrap(), body);
        let minimal = BootSource {
            kernel_image_path: "/k".into(),
            boot_args: None,
            initrd_path: None,
        };
        assert_eq!(
            serde_json::to_string(&minimal).unwrap(),
            r#"{"kernel_image_path":"/k"}"#
        );
        assert!(
            serde_json::from_str::<BootSource>(r#"{"kernel_image_path":"/k","kernel":"/k"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<BootSource>(r#"{"boot_args":"quiet"}"#).is_err());
    }
}
