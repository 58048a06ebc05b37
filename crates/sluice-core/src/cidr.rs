//! IP address ranges (CIDR blocks) and ordered lists of them.
//!
//! [`CidrList`] answers "which is the first rule, in configuration order, whose block
//! contains this address" in at most 32 (IPv4) or 128 (IPv6) steps, however many rules
//! there are: the rules are stored in a binary trie over the address bits, each node
//! remembering the lowest rule index that ends there, and a lookup walks the address's
//! path keeping the lowest index it meets. That is the nginx `allow`/`deny` semantics
//! (first match wins) at the cost of a longest-prefix walk, so a deny list of 100,000
//! blocks costs the same per request as one of ten.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for an
//! IPv4 client) are looked up as the IPv4 address they carry.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One block of addresses: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a text is not a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part does not parse.
    #[error("`{0}` is not an IP address")]
    Address(String),
    /// The prefix length is not a number within the family's width.
    #[error("`/{prefix}` is not a prefix length for {family} (0 to {max})")]
    Prefix {
        /// As written.
        prefix: String,
        /// IPv4 or IPv6.
        family: &'static str,
        /// 32 or 128.
        max: u8,
    },
    /// Bits are set below the prefix (`10.1.2.3/8`): almost always a typo.
    #[error("`{text}` has bits set after the /{prefix} prefix; the block is {network}")]
    HostBits {
        /// As written.
        text: String,
        /// The prefix length.
        prefix: u8,
        /// What was probably meant.
        network: String,
    },
}

impl Cidr {
    /// The block of `addr` with `prefix` leading bits (clamped to the family's width);
    /// bits after the prefix are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let addr = canonical(addr);
        let prefix = prefix.min(width(addr));
        Self { addr: mask(addr, prefix), prefix }
    }

    /// The block holding just `addr`.
    pub fn host(addr: IpAddr) -> Self {
        let addr = canonical(addr);
        Self::new(addr, width(addr))
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        width(ip) == width(self.addr) && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`192.0.2.7`, `::1`).
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| CidrError::Address(addr_text.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => {
                    return Err(CidrError::Prefix {
                        prefix: p.to_owned(),
                        family: if addr.is_ipv4() { "IPv4" } else { "IPv6" },
                        max,
                    })
                }
            },
        };
        // Mapped IPv4 (`::ffff:10.0.0.0/104`) is stored as IPv4 (/8).
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && prefix >= 96 => {
                (IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)), prefix - 96)
            }
            other => (other, prefix),
        };
        let cidr = Cidr { addr: mask(addr, prefix), prefix };
        if cidr.addr != addr {
            return Err(CidrError::HostBits { text: text.to_owned(), prefix, network: cidr.to_string() });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    let keep = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
    let masked = bits(ip) & keep;
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(masked >> 96).unwrap_or(0))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(masked)),
    }
}

const NONE: u32 = u32::MAX;

/// A binary trie node: children by the next bit, and the lowest rule ending here.
#[derive(Debug, Clone, Copy)]
struct Node {
    child: [u32; 2],
    rule: u32,
}

impl Node {
    const EMPTY: Node = Node { child: [NONE, NONE], rule: NONE };
}

#[derive(Debug, Clone)]
struct Trie {
    nodes: Vec<Node>,
}

impl Trie {
    fn new() -> Self {
        Self { nodes: vec![Node::EMPTY] }
    }

    fn insert(&mut self, key: u128, prefix: u8, rule: u32) {
        let mut at = 0usize;
        for depth in 0..prefix {
            let bit = ((key >> (127 - u32::from(depth))) & 1) as usize;
            let next = self.nodes[at].child[bit];
            at = if next == NONE {
                let id = self.nodes.len();
                self.nodes.push(Node::EMPTY);
                self.nodes[at].child[bit] = u32::try_from(id).unwrap_or(NONE);
                id
            } else {
                next as usize
            };
        }
        let node = &mut self.nodes[at];
        node.rule = node.rule.min(rule);
    }

    fn first_match(&self, key: u128, depth_max: u8) -> u32 {
        let mut best = NONE;
        let mut at = 0usize;
        for depth in 0..=depth_max {
            let node = self.nodes[at];
            best = best.min(node.rule);
            if depth == depth_max {
                break;
            }
            let bit = ((key >> (127 - u32::from(depth))) & 1) as usize;
            match node.child[bit] {
                NONE => break,
                next => at = next as usize,
            }
        }
        best
    }
}

/// Rules in order, each a block and a value; a lookup finds the first rule containing an
/// address.
#[derive(Debug, Clone)]
pub struct CidrList<T> {
    values: Vec<T>,
    v4: Trie,
    v6: Trie,
}

impl<T> Default for CidrList<T> {
    fn default() -> Self {
        Self { values: Vec::new(), v4: Trie::new(), v6: Trie::new() }
    }
}

impl<T> CidrList<T> {
    /// An empty list (matches nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a rule (it loses to every rule added before it).
    pub fn push(&mut self, block: Cidr, value: T) {
        let index = u32::try_from(self.values.len()).unwrap_or(NONE - 1);
        self.values.push(value);
        let trie = if block.addr.is_ipv4() { &mut self.v4 } else { &mut self.v6 };
        trie.insert(bits(block.addr), block.prefix, index);
    }

    /// Appends a rule that matches every address, IPv4 and IPv6 (nginx's `all`).
    pub fn push_all(&mut self, value: T) {
        let index = u32::try_from(self.values.len()).unwrap_or(NONE - 1);
        self.values.push(value);
        self.v4.insert(0, 0, index);
        self.v6.insert(0, 0, index);
    }

    /// The value of the first rule whose block contains `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        let ip = canonical(ip);
        let found = match ip {
            IpAddr::V4(_) => self.v4.first_match(bits(ip), 32),
            IpAddr::V6(_) => self.v6.first_match(bits(ip), 128),
        };
        self.values.get(found as usize)
    }

    /// Whether any rule contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.lookup(ip).is_some()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A set of blocks (trusted proxies, say): a [`CidrList`] without values.
pub type CidrSet = CidrList<()>;

impl FromIterator<Cidr> for CidrSet {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> Self {
        let mut set = CidrSet::new();
        for block in iter {
            set.push(block, ());
        }
        set
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_blocks_and_refuses_typos() {
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("192.0.2.7".parse::<Cidr>().unwrap().to_string(), "192.0.2.7/32");
        assert_eq!("2001:db8::/32".parse::<Cidr>().unwrap().to_string(), "2001:db8::/32");
        assert_eq!("::ffff:10.0.0.0/104".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix(), 0);
        assert!(matches!("10.1.2.3/8".parse::<Cidr>(), Err(CidrError::HostBits { .. })));
        assert!(matches!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Prefix { .. })));
        assert!(matches!("10.0.0.0/+8".parse::<Cidr>(), Err(CidrError::Prefix { .. })));
        assert!(matches!("10.0.0/8".parse::<Cidr>(), Err(CidrError::Address(_))));
        assert!(matches!("example.com".parse::<Cidr>(), Err(CidrError::Address(_))));
    }

    #[test]
    fn contains_handles_mapped_addresses() {
        let block: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(block.contains(ip("10.200.1.1")));
        assert!(block.contains(ip("::ffff:10.200.1.1")));
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(!block.contains(ip("::a00:1")));
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let mut list = CidrList::new();
        list.push("192.0.2.1".parse().unwrap(), "deny-one");
        list.push("192.0.2.0/24".parse().unwrap(), "allow-net");
        list.push("192.0.0.0/16".parse().unwrap(), "deny-wide");
        list.push("192.0.2.128/25".parse().unwrap(), "never: shadowed by allow-net");
        list.push_all("deny-all");
        assert_eq!(list.lookup(ip("192.0.2.1")), Some(&"deny-one"));
        assert_eq!(list.lookup(ip("192.0.2.200")), Some(&"allow-net"));
        assert_eq!(list.lookup(ip("192.0.3.1")), Some(&"deny-wide"));
        assert_eq!(list.lookup(ip("8.8.8.8")), Some(&"deny-all"));
        assert_eq!(list.lookup(ip("2001:db8::1")), Some(&"deny-all"));
        // A wide block written first shadows narrower ones after it.
        let mut list = CidrList::new();
        list.push("10.0.0.0/8".parse().unwrap(), 1);
        list.push("10.1.0.0/16".parse().unwrap(), 2);
        assert_eq!(list.lookup(ip("10.1.2.3")), Some(&1));
        assert_eq!(list.lookup(ip("11.1.2.3")), None);
    }

    #[test]
    fn lookups_agree_with_a_linear_scan_over_thousands_of_rules() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut rules = Vec::new();
        let mut list = CidrList::new();
        for i in 0..5_000u32 {
            let r = next();
            let block = if r % 3 == 0 {
                Cidr::new(IpAddr::V6(Ipv6Addr::from(u128::from(r) << 64 | u128::from(next()))), (r % 129) as u8)
            } else {
                // Concentrated in 10/8 so that blocks overlap.
                let v4 = 0x0a00_0000 | (r as u32 & 0x00ff_ffff);
                Cidr::new(IpAddr::V4(Ipv4Addr::from(v4)), 8 + (r >> 40) as u8 % 25)
            };
            rules.push((block, i));
            list.push(block, i);
        }
        for _ in 0..20_000 {
            let r = next();
            let probe = if r % 3 == 0 {
                IpAddr::V6(Ipv6Addr::from(u128::from(r) << 64 | u128::from(next())))
            } else {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x00ff_ffff)))
            };
            let linear = rules.iter().find(|(b, _)| b.contains(probe)).map(|(_, v)| v);
            assert_eq!(list.lookup(probe), linear, "{probe}");
        }
    }
}
