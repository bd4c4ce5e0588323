//! `portcullis health`: a grpc.health.v1 client, so a container's HEALTHCHECK
//! (or an operator) can ask a running instance without grpcurl. Exit 0 when the
//! service is SERVING; 1 when it is not, or cannot be asked.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::{EXIT_INVALID, EXIT_OK, HealthArgs};

pub async fn run(args: HealthArgs) -> u8 {
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
