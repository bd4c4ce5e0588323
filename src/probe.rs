//! `portcullis health`: a grpc.health.v1 client, so an operator can ask a
//! running instance without grpcurl (exit 0 when the service is SERVING; 1 when
//! it is not, or cannot be asked), and with `--live` the HTTP `/healthz` check a
//! container HEALTHCHECK needs: distroless images have no curl, and readiness
//! (keys loaded) is the wrong question for a restart decision.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::{EXIT_INVALID, EXIT_OK, HealthArgs};

pub async fn run(args: HealthArgs) -> u8 {
    if args.live {
        return live(&args).await;
    }
    match ask(&args).await {
        Ok(ServingStatus::Serving) => {
            println!("SERVING");
            EXIT_OK
        }
        Ok(status) => {
            println!("{}", status.as_str_name());
            EXIT_INVALID
        }
        Err(why) => {
            eprintln!("health {}: {why}", args.addr);
            EXIT_INVALID
        }
    }
}

/// Alive = the HTTP port answers `/healthz` with 200, as the Kubernetes liveness probe asks.
async fn live(args: &HealthArgs) -> u8 {
    let timeout = Duration::from_millis(args.timeout_ms);
    let url = format!("http://{}/healthz", args.http);
    let client = match reqwest::Client::builder().no_proxy().timeout(timeout).build() {
        Ok(client) => client,
        Err(err) => {
            eprintln!("health --live: {err}");
            return EXIT_INVALID;
        }
    };
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => {
            println!("alive");
            EXIT_OK
        }
        Ok(response) => {
            eprintln!("health --live {}: HTTP {}", args.http, response.status().as_u16());
            EXIT_INVALID
        }
        Err(err) => {
            eprintln!("health --live {}: cannot connect: {err}", args.http);
            EXIT_INVALID
        }
    }
}

async fn ask(args: &HealthArgs) -> Result<ServingStatus, String> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let channel = channel(args, timeout).await?;
    let request = HealthCheckRequest { service: args.service.clone() };
    let response = HealthClient::new(channel).check(request).await.map_err(|status| status.message().to_string())?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

async fn channel(args: &HealthArgs, timeout: Duration) -> Result<Channel, String> {
    let scheme = if args.ca.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{}", args.addr))
        .map_err(|err| format!("--addr: {err}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let endpoint = match &args.ca {
        None => endpoint,
        Some(ca) => endpoint.tls_config(tls(args, ca)?).map_err(|err| err.to_string())?,
    };
    endpoint.connect().await.map_err(|err| format!("cannot connect: {err}"))
}

fn tls(args: &HealthArgs, ca: &std::path::Path) -> Result<ClientTlsConfig, String> {
    let read =
        |path: &std::path::Path| std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()));
    let host = args.addr.rsplit_once(':').map_or(args.addr.as_str(), |(host, _)| host).trim_matches(['[', ']']);
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .domain_name(args.server_name.clone().unwrap_or_else(|| host.to_string()));
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}
