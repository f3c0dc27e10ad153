//! Domain types of the VPC data plane, parsed and validated at the gRPC edge (`convert`), so
//! the backends only ever see well-formed addresses.

use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts
                .next()
                .ok_or_else(|| format!("bad MAC address {s:?}"))?;
            if part.len() != 2 {
                return Err(format!("bad MAC address {s:?}"));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("bad MAC address {s:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("bad MAC address {s:?}"));
        }
        Ok(Mac(out))
    }
}

/// One VPC as this host must build it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcSpec {
    pub vpc_id: String,
    /// 24-bit VXLAN network identifier.
    pub vni: u32,
    pub subnets: Vec<SubnetSpec>,
    /// Underlay addresses of the other hosts of this VPC (VXLAN flood/FDB destinations).
    pub peers: Vec<Ipv4Addr>,
    /// Instances of this VPC on other hosts (static FDB + neighbour entries).
    pub remote_endpoints: Vec<RemoteEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetSpec {
    pub subnet_id: String,
    pub cidr: Ipv4Net,
    /// Lives on the VPC bridge.
    pub gateway: Ipv4Addr,
    /// Masquerade traffic leaving the VPC for the outside world.
    pub nat_egress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Underlay address of the host it runs on.
    pub node_ip: Ipv4Addr,
}

/// Transport protocol of a firewall rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    All,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "icmp" => Ok(Self::Icmp),
            "all" | "" => Ok(Self::All),
            other => Err(format!("unknown protocol {other:?}")),
        }
    }
}

/// One allow rule. Ports only apply to tcp/udp; `0..=0` means every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallRule {
    pub protocol: Protocol,
    pub port_min: u16,
    pub port_max: u16,
    /// Remote addresses (source for ingress, destination for egress). Never empty.
    pub cidrs: Vec<Ipv4Net>,
}

/// An instance's port in a VPC, with its security groups resolved to rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAttachment {
    pub vpc_id: String,
    pub vni: u32,
    pub subnet_id: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: Mac,
    /// Ingress is denied unless one of these allows it.
    pub ingress: Vec<FirewallRule>,
    /// Egress is allowed, unless `egress_restricted`, in which case only these allow it.
    pub egress: Vec<FirewallRule>,
    pub egress_restricted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m: Mac = "02:7c:0a:0a:01:05".parse().unwrap();
        assert_eq!(m.0, [0x02, 0x7c, 0x0a, 0x0a, 0x01, 0x05]);
        assert_eq!(m.to_string(), "02:7c:0a:0a:01:05");
        for bad in [
            "",
            "02:7c",
            "02:7c:0a:0a:01:05:06",
            "zz:7c:0a:0a:01:05",
            "2:7c:0a:0a:01:05",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
