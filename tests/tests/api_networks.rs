//! Real wallet addresses (issue 17): a user's internal EVM wallet is at the CREATE2 address
//! (EIP-1014) its network's factory will deploy it to, salted by the user's identifier email
//! and EIP-55 checksummed; every wallet says its chain id and, where the network is known,
//! its explorer URL (Amoy included). On both stores.

#[macro_use]
mod common;

use common::*;
use identity_domain::derive::{counterfactual_address, WalletFactory};
use identity_proto::v1 as pb;

on_both_stores!(
    internal_wallets_are_at_their_create2_address_with_chain_and_explorer,
    a_directory_from_before_wallet_networks_is_rebuilt_at_start,
);

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
        let in_directory = balances
            .user
            .expect("user")
            .wallets
            .into_iter()
            .find(|w| w.wallet_id == amoy.wallet_id)
            .expect("the directory lists the Amoy wallet");
        assert_eq!(
            (
                in_directory.address.as_str(),
                in_directory.network.as_str(),
                in_directory.chain_id,
                in_directory.explorer_url.as_str()
            ),
            (
                amoy.address.as_str(),
                "evm:80002",
                80002,
                amoy.explorer_url.as_str()
            )
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

    /// A store whose directory was built before it kept each wallet's network: the server
    /// sees the table's columns differ from the current ones and builds the directory again
    /// from the log, so the wallets come back with their networks.
    pub(super) async fn a_directory_from_before_wallet_networks_is_rebuilt_at_start(store: Store) {
        let mut app = spawn_app(store).await;
        let user = app.register("acme", "before@example.com").await;
        let wallet = app.active_wallet("acme", &user).await;
        let position = app.head_position().await;
        let listed = |app: &TestApp, position: u64| {
            let mut users = app.users();
            let request = req(
                "acme",
                pb::LookupUserRequest {
                    key: Some(pb::lookup_user_request::Key::Email(
                        "before@example.com".into(),
                    )),
                    min_position: position,
                    read_mask: None,
                },
            );
            async move {
                users
                    .lookup_user(request)
                    .await
                    .expect("lookup")
                    .into_inner()
                    .user
                    .expect("user")
                    .wallets
            }
        };
        assert_eq!(listed(&app, position).await.len(), 1);
        app.stop().await;
        app.db
            .sql("ALTER TABLE rm_user_wallets DROP COLUMN network")
            .await
            .expect("the old shape");
        app.restart_with(|_| {}).await;
        let wallets = listed(&app, position).await;
        assert_eq!(wallets.len(), 1, "{wallets:?}");
        assert_eq!(
            (wallets[0].wallet_id.as_str(), wallets[0].network.as_str()),
            (wallet.as_str(), "polygon")
        );
        assert_eq!(wallets[0].chain_id, 137);
    }
}
