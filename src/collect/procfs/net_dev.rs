//! `/proc/net/dev` (and `/proc/<pid>/net/dev`, the same format for that
//! process's network namespace).
//!
//! ```text
//! Inter-|   Receive                                                |  Transmit
//!  face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
//!     lo: 1664039   10528    0    0    0     0          0         0  1664039   10528    0    0    0     0       0          0
//!   eth0: 874354587 1036395    0    0    0     0          0         0 563352563  732147    0    0    0     0       0          0
//! ```

use super::ParseError;

/// Counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
}

impl IfaceCounters {
    pub fn add(&mut self, o: &IfaceCounters) {
        self.rx_bytes = self.rx_bytes.wrapping_add(o.rx_bytes);
        self.rx_packets = self.rx_packets.wrapping_add(o.rx_packets);
        self.rx_errors = self.rx_errors.wrapping_add(o.rx_errors);
        self.tx_bytes = self.tx_bytes.wrapping_add(o.tx_bytes);
        self.tx_packets = self.tx_packets.wrapping_add(o.tx_packets);
        self.tx_errors = self.tx_errors.wrapping_add(o.tx_errors);
    }
}

/// Call `f(name, counters)` for every interface line. Lines that are not
/// interface lines (the two headers) are skipped; an interface line with too
/// few or non-numeric fields is an error.
pub fn parse(text: &str, mut f: impl FnMut(&str, &IfaceCounters)) -> Result<(), ParseError> {
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.contains('|') {
            continue;
        }
        let mut v = [0u64; 16];
        let mut n = 0;
        for (i, field) in rest.split_ascii_whitespace().enumerate() {
            if i >= 16 {
                break;
            }
            v[i] = field.parse().map_err(|_| {
                ParseError::new("net/dev", format!("interface {name}: bad number {field:?}"))
            })?;
            n = i + 1;
        }
        if n < 16 {
            return Err(ParseError::new(
                "net/dev",
                format!("interface {name}: {n} fields, expected 16"),
            ));
        }
        f(
            name,
            &IfaceCounters {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
            },
        );
    }
    Ok(())
}

/// Virtual interfaces whose traffic is counted elsewhere (or twice): the
/// node total skips them (SPEC §4).
pub fn is_virtual(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "veth",
        "docker",
        "cali",
        "flannel",
        "cni",
        "br-",
        "br0",
        "virbr",
        "vxlan",
        "tunl",
        "tun",
        "tap",
        "weave",
        "kube-",
        "cilium",
        "lxc",
        "genev",
        "gre",
        "ip6tnl",
        "ip6gre",
        "sit",
        "nodelocaldns",
        "dummy",
        "vnet",
        "wg",
        "erspan",
        "ipip",
        "vrf",
        "ovs-",
        "antrea",
        "ifb",
        "macvlan",
        "macvtap",
        "ipvl",
        "bond",
        "team",
        "nlmon",
        "gretap",
        "ip_vti",
        "ip6_vti",
    ];
    // a VLAN (`eth0.100`) is counted in its parent already
    name == "lo" || name.contains('.') || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Sum of all interfaces but `lo` (a pod's namespace: its veth end is its
/// real interface there).
pub fn sum_but_lo(text: &str) -> Result<IfaceCounters, ParseError> {
    let mut total = IfaceCounters::default();
    parse(text, |name, c| {
        if name != "lo" {
            total.add(c);
        }
    })?;
    Ok(total)
}

/// Sum over the node's physical interfaces.
pub fn sum_physical(text: &str) -> Result<IfaceCounters, ParseError> {
    let mut total = IfaceCounters::default();
    parse(text, |name, c| {
        if !is_virtual(name) {
            total.add(c);
        }
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1664039   10528    0    0    0     0          0         0  1664039   10528    0    0    0     0       0          0
  eth0: 874354587 1036395    3    0    0     0          0         0 563352563  732147    1    0    0     0       0          0
vethab12: 100 2 0 0 0 0 0 0 200 3 0 0 0 0 0 0
";

    #[test]
    fn sums() {
        let p = sum_physical(SAMPLE).unwrap();
        assert_eq!(p.rx_bytes, 874354587);
        assert_eq!(p.tx_packets, 732147);
        assert_eq!(p.rx_errors, 3);
        assert_eq!(p.tx_errors, 1);
        let all = sum_but_lo(SAMPLE).unwrap();
        assert_eq!(all.rx_bytes, 874354687);
        assert_eq!(all.tx_bytes, 563352763);
    }

    #[test]
    fn truncated_is_an_error() {
        assert!(sum_but_lo("  eth0: 1 2 3\n").is_err());
        assert!(sum_but_lo("  eth0: 1 2 3 x 5 6 7 8 9 10 11 12 13 14 15 16\n").is_err());
    }

    #[test]
    fn virtual_interfaces() {
        for v in [
            "lo",
            "veth1a2b",
            "docker0",
            "cali123",
            "flannel.1",
            "cni0",
            "bond0",
            "eth0.100",
            "ifb0",
            "br0",
            "wg0",
        ] {
            assert!(is_virtual(v), "{v}");
        }
        for p in ["eth0", "ens5", "enp0s3", "wlan0", "eno1"] {
            assert!(!is_virtual(p), "{p}");
        }
    }
}
