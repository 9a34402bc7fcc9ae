//! Prints the nft batches Skiff sends (one JSON document per line), for checking them by hand
//! with `nft -c -j -f -` in a scratch network namespace.
fn main() {
    use skiff_net::nft::*;
    use std::net::Ipv4Addr;
    println!("{}", base_batch(Some("eth9"), false));
    println!("{}", bridge_batch("skiff0", false));
    println!("{}", bridge_batch("skb0011", true));
    println!("{}", group_batch("g-0123456789ab", Ipv4Addr::new(127, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 2), &[(80, Proto::Tcp), (53, Proto::Udp)]));
    println!("{}", delete_element_batch(Ipv4Addr::new(127, 77, 0, 2)));
    println!("{}", delete_chain_batch("g-0123456789ab"));
}
