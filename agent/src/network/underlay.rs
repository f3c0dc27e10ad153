//! Finding this host's underlay: the address other nodes reach its VXLAN endpoint at, and the
//! MTU of the interface that holds it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};

/// How the operator chose the underlay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderlayChoice {
    /// The source address the kernel would use towards the scheduler (or, when that is a
    /// loopback address, towards the default route).
    Auto,
    /// Exactly this address.
    Fixed(Ipv4Addr),
    /// No VPC networking on this node.
    Disabled,
}

impl std::str::FromStr for UnderlayChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" | "off" => Ok(Self::Disabled),
            ip => ip
                .parse::<Ipv4Addr>()
                .ok()
                .filter(|ip| !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast())
                .map(Self::Fixed)
                .ok_or_else(|| {
                    format!("{ip:?} is not an IPv4 unicast address, \"auto\" or \"none\"")
                }),
        }
    }
}

/// The local source address for packets to `target` (no packet is sent: connecting a UDP
/// socket only asks the routing table).
fn source_towards(target: SocketAddr) -> Option<Ipv4Addr> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect(target).ok()?;
    match sock.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// Resolves the choice for an agent whose scheduler is `scheduler` (`HOST:PORT`).
pub fn resolve(choice: UnderlayChoice, scheduler: &str) -> Option<Ipv4Addr> {
    match choice {
        UnderlayChoice::Disabled => None,
        UnderlayChoice::Fixed(ip) => Some(ip),
        UnderlayChoice::Auto => {
            let towards_scheduler = scheduler
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.find(SocketAddr::is_ipv4))
                .and_then(source_towards)
                .filter(|ip| !ip.is_loopback());
            // A scheduler on this host (single-node setups): use the default route's source,
            // else loopback, which still works for a single node (no peers to reach).
            towards_scheduler
                .or_else(|| source_towards(SocketAddr::from(([192, 0, 2, 1], 4789))))
                .or(Some(Ipv4Addr::LOCALHOST))
        }
    }
}

/// MTU of the interface holding `ip` (1500 when it cannot be found).
pub fn mtu_of(ip: Ipv4Addr) -> u32 {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return 1500;
    };
    for a in addrs {
        let matches = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .is_some_and(|sin| sin.ip() == ip);
        if matches {
            let path = format!("/sys/class/net/{}/mtu", a.interface_name);
            if let Some(mtu) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                // Loopback's 65536 would give instances an MTU no real peer accepts.
                return mtu.min(9000);
            }
        }
    }
    1500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices() {
        assert_eq!("auto".parse::<UnderlayChoice>(), Ok(UnderlayChoice::Auto));
        assert_eq!(
            "none".parse::<UnderlayChoice>(),
            Ok(UnderlayChoice::Disabled)
        );
        assert_eq!(
            "10.0.0.5".parse::<UnderlayChoice>(),
            Ok(UnderlayChoice::Fixed(Ipv4Addr::new(10, 0, 0, 5)))
        );
        assert!("0.0.0.0".parse::<UnderlayChoice>().is_err());
        assert!("eth0".parse::<UnderlayChoice>().is_err());
    }

    #[test]
    fn resolves_on_this_host() {
        assert_eq!(resolve(UnderlayChoice::Disabled, "127.0.0.1:7443"), None);
        let ip = resolve(UnderlayChoice::Auto, "127.0.0.1:7443").expect("an address");
        assert!(!ip.is_unspecified());
        assert!(mtu_of(ip) >= 1280, "{}", mtu_of(ip));
        assert_eq!(mtu_of(Ipv4Addr::new(203, 0, 113, 99)), 1500);
    }
}
