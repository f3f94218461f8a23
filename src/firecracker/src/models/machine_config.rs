//! `PUT /machine-config`: `MachineConfiguration`.

use serde::{Deserialize, Serialize};

/// What backs guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4 KiB pages.
    None,
    /// Explicit 2 MiB hugetlbfs pages (`mem_size_mib` must then be even).
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// vCPUs and memory. The deprecated `cpu_template` is not modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfiguration {
    /// 1 to 32; with SMT, 1 or even.
    pub vcpu_count: u8,
    pub mem_size_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Needed for diff snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

/// Firecracker's vCPU limit.
pub const MAX_VCPUS: u8 = 32;

impl MachineConfiguration {
    /// `vcpu_count` vCPUs and `mem_size_mib` MiB, everything else Firecracker's default.
    pub fn new(vcpu_count: u8, mem_size_mib: u64) -> Self {
        Self {
            vcpu_count,
            mem_size_mib,
            smt: None,
            track_dirty_pages: None,
            huge_pages: None,
        }
    }

    /// What Firecracker would refuse, said before asking it.
    pub fn check(&self) -> Result<(), String> {
        if self.vcpu_count == 0 || self.vcpu_count > MAX_VCPUS {
            return Err(format!(
                "vcpu_count {} is outside 1..={MAX_VCPUS}",
                self.vcpu_count
            ));
        }
        if self.smt == Some(true) && self.vcpu_count != 1 && !self.vcpu_count.is_multiple_of(2) {
            return Err(format!(
                "with SMT, vcpu_count must be 1 or even, not {}",
                self.vcpu_count
            ));
        }
        if self.mem_size_mib == 0 {
            return Err("mem_size_mib is 0".into());
        }
        if self.huge_pages == Some(HugePages::Hugetlbfs2M) && !self.mem_size_mib.is_multiple_of(2) {
            return Err(format!(
                "with 2M huge pages, mem_size_mib must be even, not {}",
                self.mem_size_mib
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_config_json_and_checks() {
        let m = MachineConfiguration::new(2, 512);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"vcpu_count":2,"mem_size_mib":512}"#
        );
        let hp = MachineConfiguration {
            huge_pages: Some(HugePages::Hugetlbfs2M),
            smt: Some(false),
            ..m
        };
        let json = serde_json::to_value(hp).unwrap();
        assert_eq!(json["huge_pages"], "2M");
        assert_eq!(
            serde_json::from_value::<MachineConfiguration>(json).unwrap(),
            hp
        );
        assert!(m.check().is_ok());
        assert!(MachineConfiguration::new(0, 512).check().is_err());
        assert!(MachineConfiguration::new(33, 512).check().is_err());
        assert!(MachineConfiguration::new(1, 0).check().is_err());
        let smt3 = MachineConfiguration {
            smt: Some(true),
            ..MachineConfiguration::new(3, 512)
        };
        assert!(smt3.check().unwrap_err().contains("SMT"));
        let odd = MachineConfiguration {
            huge_pages: Some(HugePages::Hugetlbfs2M),
            ..MachineConfiguration::new(1, 511)
        };
        assert!(odd.check().unwrap_err().contains("even"));
        assert!(
            serde_json::from_str::<MachineConfiguration>(
                r#"{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"T2"}"#
            )
            .is_err()
        );
    }
}
