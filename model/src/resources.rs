//! Resource vectors: what a task asks for and what a machine offers.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign};

/// A resource vector. CPU is in millicores so that integer arithmetic is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub ram_bytes: u64,
    pub disk_bytes: u64,
    pub gpus: u32,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        ram_bytes: 0,
        disk_bytes: 0,
        gpus: 0,
    };

    /// Every dimension at its maximum: an unlimited quota.
    pub const UNLIMITED: Resources = Resources {
        cpu_millis: u64::MAX,
        ram_bytes: u64::MAX,
        disk_bytes: u64::MAX,
        gpus: u32::MAX,
    };

    pub fn new(cpu_millis: u64, ram_bytes: u64) -> Self {
        Resources {
            cpu_millis,
            ram_bytes,
            ..Resources::ZERO
        }
    }

    /// True when every dimension of `self` is at most the same dimension of `other`.
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.cpu_millis <= other.cpu_millis
            && self.ram_bytes <= other.ram_bytes
            && self.disk_bytes <= other.disk_bytes
            && self.gpus <= other.gpus
    }

    /// Per-dimension subtraction that stops at zero (what is left of a capacity).
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            ram_bytes: self.ram_bytes.saturating_sub(other.ram_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(other.disk_bytes),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// Multiply every dimension, saturating (a job's total from its per-task request).
    pub fn saturating_mul(&self, factor: u64) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_mul(factor),
            ram_bytes: self.ram_bytes.saturating_mul(factor),
            disk_bytes: self.disk_bytes.saturating_mul(factor),
            gpus: u32::try_from(u64::from(self.gpus).saturating_mul(factor)).unwrap_or(u32::MAX),
        }
    }

    /// Names of the dimensions in which `self` exceeds `available`, for error messages
    /// and "why pending" explanations.
    pub fn exceeded_dimensions(&self, available: &Resources) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.cpu_millis > available.cpu_millis {
            out.push("cpu");
        }
        if self.ram_bytes > available.ram_bytes {
            out.push("ram");
        }
        if self.disk_bytes > available.disk_bytes {
            out.push("disk");
        }
        if self.gpus > available.gpus {
            out.push("gpu");
        }
        out
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, rhs: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(rhs.cpu_millis),
            ram_bytes: self.ram_bytes.saturating_add(rhs.ram_bytes),
            disk_bytes: self.disk_bytes.saturating_add(rhs.disk_bytes),
            gpus: self.gpus.saturating_add(rhs.gpus),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, rhs: Resources) {
        *self = *self + rhs;
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cpu={}m ram={} disk={}",
            self.cpu_millis,
            format_bytes(self.ram_bytes),
            format_bytes(self.disk_bytes)
        )?;
        if self.gpus > 0 {
            write!(f, " gpu={}", self.gpus)?;
        }
        Ok(())
    }
}

/// Human form of a byte count in binary units (`512Mi`, `2.0Gi`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if bytes >= size {
            return if bytes.is_multiple_of(size) {
                format!("{}{}", bytes / size, suffix)
            } else {
                format!("{:.1}{}", bytes as f64 / size as f64, suffix)
            };
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_is_per_dimension() {
        let cap = Resources::new(1000, 1 << 30);
        assert!(Resources::new(1000, 1 << 30).fits_in(&cap));
        assert!(!Resources::new(1001, 1).fits_in(&cap));
        assert_eq!(
            Resources::new(2000, 1).exceeded_dimensions(&cap),
            vec!["cpu"]
        );
    }

    #[test]
    fn arithmetic_saturates() {
        let a = Resources::new(u64::MAX, 5);
        assert_eq!((a + a).cpu_millis, u64::MAX);
        assert_eq!(Resources::new(1, 1).saturating_sub(&a).ram_bytes, 0);
        assert_eq!(
            Resources::new(3, 4).saturating_mul(3),
            Resources::new(9, 12)
        );
    }

    #[test]
    fn bytes_print_in_binary_units() {
        assert_eq!(format_bytes(512 << 20), "512Mi");
        assert_eq!(format_bytes(1536 << 20), "1.5Gi");
        assert_eq!(format_bytes(100), "100B");
    }
}
