//! `allow` and `deny` rules by client address, first match wins (nginx's semantics: an
//! address no rule matches is allowed, so lists end with `deny "all"`).

use std::net::IpAddr;

use sluice_core::cidr::{Cidr, CidrList};

/// Ordered address rules.
#[derive(Debug, Default)]
pub struct IpRules {
    rules: CidrList<bool>,
}

impl IpRules {
    /// An empty rule list (allows everyone).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a rule for `blocks` (`allow` when true).
    pub fn push(&mut self, allow: bool, blocks: impl IntoIterator<Item = Cidr>) {
        for block in blocks {
            self.rules.push(block, allow);
        }
    }

    /// Appends a rule for every address.
    pub fn push_all(&mut self, allow: bool) {
        self.rules.push_all(allow);
    }

    /// Whether `ip` may pass.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.rules.lookup(ip).copied().unwrap_or(true)
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nginx_semantics() {
        let mut rules = IpRules::new();
        rules.push(false, ["192.168.1.1".parse().unwrap()]);
        rules.push(true, ["192.168.1.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()]);
        rules.push_all(false);
        assert!(!rules.allows("192.168.1.1".parse().unwrap()));
        assert!(rules.allows("192.168.1.2".parse().unwrap()));
        assert!(rules.allows("2001:db8::5".parse().unwrap()));
        assert!(!rules.allows("10.0.0.1".parse().unwrap()));
        assert!(IpRules::new().allows("10.0.0.1".parse().unwrap()), "no rules: allowed");
    }
}
