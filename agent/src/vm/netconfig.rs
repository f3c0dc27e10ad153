//! The cloud-init `network-config` (version 2) of a VM: its VPC address, default route via the
//! subnet's gateway, and the host's upstream DNS servers, on the NIC with the port's MAC
//! (renamed `eth0`, whatever the guest calls it). A VM without a VPC port gets an empty
//! configuration (cloud-init's fallback: DHCP on the first NIC, and there is none).

use crate::network::NetworkAttachment;
use std::net::Ipv4Addr;

/// The guest's network configuration.
pub fn network_config(a: Option<&NetworkAttachment>, nameservers: &[Ipv4Addr]) -> String {
    let Some(a) = a else {
        return "version: 2\n".to_owned();
    };
    let mut s = format!(
        "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"{}\"\n    set-name: eth0\n    addresses:\n      - {}/{}\n    routes:\n      - to: 0.0.0.0/0\n        via: {}\n",
        a.mac, a.ip, a.prefix_len, a.gateway
    );
    if !nameservers.is_empty() {
        s.push_str("    nameservers:\n      addresses:\n");
        for n in nameservers {
            s.push_str(&format!("        - {n}\n"));
        }
    }
    s
}

/// IPv4 nameservers of a resolv.conf that a guest can reach through NAT: loopback resolvers
/// (systemd-resolved's 127.0.0.53, a local dnsmasq) are the host's own and are left out.
pub fn upstream_nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.parse::<Ipv4Addr>().ok())
                .flatten()
        })
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect()
}

/// [`upstream_nameservers`] of this host's `/etc/resolv.conf` (none when unreadable).
pub async fn host_nameservers() -> Vec<Ipv4Addr> {
    tokio::fs::read_to_string("/etc/resolv.conf")
        .await
        .map(|s| upstream_nameservers(&s))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Mac;

    #[test]
    fn a_port_becomes_a_static_address_with_a_default_route() {
        let a = NetworkAttachment {
            vpc_id: "v".into(),
            vni: 7,
            subnet_id: "s".into(),
            ip: "10.1.0.5".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.1.0.1".parse().unwrap(),
            mac: Mac([2, 0x7c, 10, 1, 0, 5]),
            ingress: vec![],
            egress: vec![],
            egress_restricted: false,
        };
        let c = network_config(Some(&a), &["192.0.2.53".parse().unwrap()]);
        assert_eq!(
            c,
            "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"02:7c:0a:01:00:05\"\n    set-name: eth0\n    addresses:\n      - 10.1.0.5/24\n    routes:\n      - to: 0.0.0.0/0\n        via: 10.1.0.1\n    nameservers:\n      addresses:\n        - 192.0.2.53\n"
        );
        assert!(!network_config(Some(&a), &[]).contains("nameservers"));
        assert_eq!(network_config(None, &[]), "version: 2\n");
    }

    #[test]
    fn loopback_resolvers_are_not_given_to_guests() {
        let conf = "# generated\nsearch example.org\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nnameserver 1.1.1.1 # x\noptions edns0\n";
        let got = upstream_nameservers(conf);
        assert_eq!(
            got,
            vec![
                "10.0.0.2".parse::<Ipv4Addr>().unwrap(),
                "1.1.1.1".parse().unwrap()
            ]
        );
    }
}
