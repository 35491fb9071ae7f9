//! Wires settings, telemetry and the application; nothing else.

use identity_server::{telemetry, Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let _telemetry = telemetry::init(settings.log_json);
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}
