//! Real wallet addresses (issue 17): a user's internal EVM wallet is at the CREATE2 address
//! (EIP-1014) its network's factory will deploy it to, salted by the user's identifier email
//! and EIP-55 checksummed; every wallet says its chain id and, where the network is known,
//! its explorer URL (Amoy included). On both stores.

#[macro_use]
mod common;

use common::*;
use identity_domain::derive::{counterfactual_address, WalletFactory};
use identity_proto::v1 as pb;

on_both_stores!(internal_wallets_are_at_their_create2_address_with_chain_and_explorer,);

/// Amoy's own factory in this test; every other EVM network uses development's.
const AMOY_FACTORY: &str = "0x00000000000000000000000000000000deadbeef:0x00000000000000000000000000000000000000000000000000000000000000aa";

mod scenarios {
    use super::*;

    pub(super) async fn internal_wallets_are_at_their_create2_address_with_chain_and_explorer(
        store: Store,
    ) {
        let app = spawn_app_with(store, |s| {
            s.wallet_factories = Some(format!("80002={AMOY_FACTORY}"));
        })
        .await;
        let user = ok!(app
            .users()
            .register_user(registering("acme", user_input("chain@example.com"))))
        .user
        .expect("user");
        let identifier = user.identifier_email.clone();
        let open = |network: &str| {
            let mut wallets = app.wallets();
            let request = req("acme", user_wallet(user.user_id.clone(), network));
            async move {
                wallets
                    .open_wallet(request)
                    .await
                    .expect("opens")
                    .into_inner()
                    .wallet
                    .expect("wallet")
            }
        };

        let amoy = open("amoy").await;
        let amoy_factory = WalletFactory::parse(AMOY_FACTORY).expect("factory");
        assert_eq!(amoy.network, "evm:80002");
        assert_eq!(
            amoy.address,
            counterfactual_address(&identifier, &amoy_factory)
        );
        assert_ne!(
            amoy.address,
            amoy.address.to_ascii_lowercase(),
            "EIP-55 mixed case"
        );
        assert_eq!(amoy.chain_id, 80002);
        assert_eq!(
            amoy.explorer_url,
            format!("https://amoy.polygonscan.com/address/{}", amoy.address)
        );

        let development =
            WalletFactory::parse(identity_server::factories::DEVELOPMENT_FACTORY).expect("factory");
        let polygon = open("polygon").await;
        assert_eq!(
            polygon.address,
            counterfactual_address(&identifier, &development)
        );
        assert_eq!(polygon.chain_id, 137);
        assert_eq!(
            polygon.explorer_url,
            format!("https://polygonscan.com/address/{}", polygon.address)
        );
        // One owner and factory: one address on every chain that uses the factory.
        let base = open("base").await;
        assert_eq!(base.address, polygon.address);
        assert_eq!((base.chain_id, base.network.as_str()), (8453, "evm:8453"));
        assert!(base
            .explorer_url
            .starts_with("https://basescan.org/address/0x"));
        let unknown = open("evm:424242").await;
        assert_eq!(
            (unknown.chain_id, unknown.explorer_url.as_str()),
            (424242, "")
        );
        let solana = open("solana").await;
        assert_eq!(solana.chain_id, 0);
        assert!(!solana.address.starts_with("0x"));

        // The read side says the same.
        let position = app.head_position().await;
        let balances = ok!(app.users().get_user_with_balances(req(
            "acme",
            pb::GetUserWithBalancesRequest {
                key: Some(pb::get_user_with_balances_request::Key::UserId(
                    user.user_id.clone()
                )),
                min_position: position,
            },
        )));
        let listed = balances
            .wallets
            .iter()
            .find(|w| w.wallet_id == amoy.wallet_id)
            .expect("the Amoy wallet is listed");
        assert_eq!(
            (listed.chain_id, listed.explorer_url.as_str()),
            (80002, amoy.explorer_url.as_str())
        );
        let got = ok!(app.wallets().get_wallet(req(
            "acme",
            pb::GetWalletRequest {
                wallet_id: amoy.wallet_id.clone(),
            },
        )))
        .wallet
        .expect("wallet");
        assert_eq!((got.chain_id, got.explorer_url), (80002, amoy.explorer_url));
    }
}
