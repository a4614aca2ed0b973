//! The container image and the compose file, with real podman (and Debian's podman-compose):
//! the repository's `Dockerfile` built (only its base images and binary stage made locally:
//! no registry is reachable from the test machine), run as its non-root user with its
//! `HEALTHCHECK` passing; the embedded demo answering through a published port; a mounted
//! config served and reloaded on SIGHUP; SIGTERM draining to exit 0; and `compose.yaml` running
//! the demo backends, the gateway and Redis, with the shared cache and rate limits in Redis.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
#[path = "common/podman.rs"]
mod podman;

use gatehouse_testkit::eventually;
use podman::Podman;
use std::net::SocketAddr;
use std::time::Duration;

/// Containers start in a second or two here; the margin is for a loaded CI machine.
const START: Duration = Duration::from_secs(60);

/// One GET through the published port: status, `X-Cache`, body (`None` while not answering).
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let resp = common::timed_client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((status, cache, resp.text().await.ok()?))
}

/// Waits until the container's HEALTHCHECK (run now, as podman's timer would) passes.
async fn healthy(p: &Podman, container: &str) {
    eventually("the HEALTHCHECK passes", START, || async {
        p.run(&["healthcheck", "run", container])
            .status
            .success()
            .then_some(())
    })
    .await;
}

/// The demo's product answers come from one of its backends, alpha, beta or gamma.
fn from_a_demo_backend(body: &str) -> bool {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    ["alpha", "beta", "gamma"].contains(&v["backend"].as_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_the_demo_as_non_root_with_a_passing_healthcheck() {
    let mut p = Podman::new("demo");
    let image = p.build_gatehouse();

    // What the Dockerfile declares, as built.
    let config: serde_json::Value =
        serde_json::from_str(&p.ok(&["image", "inspect", "--format", "{{json .Config}}", &image]))
            .unwrap();
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"][0], "/usr/bin/gatehouse");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    let check = p.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .HealthCheck}}",
        &image,
    ]);
    assert!(
        check.contains(r#""CMD","/usr/bin/gatehouse","ctl","health""#),
        "{check}"
    );

    let name = p.prefix.clone();
    p.track_container(&name);
    p.ok(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--publish",
        "127.0.0.1::8080",
        // The gateway writes nothing: a read-only root file system is enough.
        "--read-only",
        &image,
    ]);
    let addr = p.published(&name, 8080);

    let (status, _, body) = eventually("the demo answers", START, || async {
        get(addr, "/api/products").await.filter(|(s, ..)| *s == 200)
    })
    .await;
    assert_eq!(status, 200);
    assert!(from_a_demo_backend(&body), "{body}");
    healthy(&p, &name).await;
    assert_eq!(
        p.uid(&name),
        65532,
        "the gateway runs as the image's non-root user"
    );

    // The demo's routes, through the container: a local 404, a cached route.
    let (status, _, body) = get(addr, "/nothing/here").await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("request_id"), "a JSON local reply: {body}");
    let first = get(addr, "/api/catalog?max_age=30").await.unwrap();
    let second = get(addr, "/api/catalog?max_age=30").await.unwrap();
    assert_eq!((first.0, first.1.as_str()), (200, "MISS"));
    assert_eq!((second.0, second.1.as_str()), (200, "HIT"));

    // `podman stop` sends the image's STOPSIGNAL (SIGTERM): the gateway drains and exits 0.
    p.ok(&["stop", "--time", "30", &name]);
    let code = p.ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code, "0", "exit code after SIGTERM");
}

fn mounted_config(body: &str) -> String {
    format!(
        "listeners: [{{name: public, address: '0.0.0.0:8080'}}]\nadmin: {{address: '127.0.0.1:9901'}}\nroutes: [{{name: r, direct_response: {{status: 200, body: {body}}}}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_serves_a_mounted_config_and_reloads_it_on_sighup() {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Podman::new("config");
    let image = p.build_gatehouse();
    // The config directory, as a ConfigMap would be: readable by the image's user (65532).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("gatehouse.yaml");
    std::fs::write(&file, mounted_config("one")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();

    let name = p.prefix.clone();
    p.track_container(&name);
    let mount = format!("{}:/etc/gatehouse:ro", dir.path().display());
    p.ok(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--publish",
        "127.0.0.1::8080",
        "--volume",
        &mount,
        "--read-only",
        &image,
        "run",
        "-c",
        "/etc/gatehouse/gatehouse.yaml",
    ]);
    let addr = p.published(&name, 8080);
    eventually("the mounted config is served", START, || async {
        get(addr, "/").await.filter(|(_, _, b)| b == "one")
    })
    .await;
    healthy(&p, &name).await;

    // An edit, then SIGHUP (what `podman kill --signal HUP` and Kubernetes tooling send).
    std::fs::write(&file, mounted_config("two")).unwrap();
    p.ok(&["kill", "--signal", "HUP", &name]);
    eventually("the reloaded config is served", START, || async {
        get(addr, "/").await.filter(|(_, _, b)| b == "two")
    })
    .await;

    // A config that does not validate is refused: the running one keeps serving.
    std::fs::write(&file, "listeners: [{name: public, address: nowhere}]\n").unwrap();
    p.ok(&["kill", "--signal", "HUP", &name]);
    eventually("the refusal is logged", START, || async {
        let logs = p.run(&["logs", &name]);
        let text = [logs.stdout, logs.stderr].concat();
        String::from_utf8_lossy(&text)
            .contains("config reload refused")
            .then_some(())
    })
    .await;
    assert_eq!(get(addr, "/").await.unwrap().2, "two");
    healthy(&p, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_runs_the_demo_with_redis_sharing_the_cache_and_rate_limits() {
    let found = std::process::Command::new("podman-compose")
        .arg("version")
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "podman-compose is not installed: run ./scripts/test.sh (Debian's podman-compose)"
    );
    let mut p = Podman::new("compose");
    let image = p.build_gatehouse();
    let redis = p.build_redis();
    let project = p.prefix.replace('-', "_");
    p.track_project(&project);
    let repo = env!("CARGO_MANIFEST_DIR");
    let compose = |args: &[&str]| {
        let out = p
            .command("podman-compose")
            .current_dir(repo)
            .args(["-p", &project, "-f", "compose.yaml"])
            .args(args)
            .env("GATEHOUSE_IMAGE", &image)
            .env("REDIS_IMAGE", &redis)
            .env("GATEHOUSE_ADMIN_TOKEN", "compose-test-token-0123456789")
            // Ports the system picks: `127.0.0.1::8080`.
            .env("GATEHOUSE_PUBLISH", "127.0.0.1:")
            .env("GATEHOUSE_ADMIN_PUBLISH", "127.0.0.1:")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman-compose {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    compose(&["up", "--detach", "--no-build"]);
    let gateway = p.compose_container(&project, "gateway");
    let redis_box = p.compose_container(&project, "redis");
    let addr = p.published(&gateway, 8080);

    // The backends are reached by their service names on the compose network.
    let (_, _, body) = eventually("the gateway answers from a demo backend", START, || async {
        get(addr, "/api/products")
            .await
            .filter(|(s, _, b)| *s == 200 && from_a_demo_backend(b))
    })
    .await;
    assert!(from_a_demo_backend(&body));
    healthy(&p, &gateway).await;
    eventually("every products endpoint is HEALTHY", START, || async {
        let out = p.run(&["exec", &gateway, "gatehouse", "ctl", "clusters", "products"]);
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        (table.matches("HEALTHY").count() == 3).then_some(())
    })
    .await;

    // The tiered cache: a miss stored in Redis too, then a hit.
    let first = get(addr, "/api/catalog?max_age=30").await.unwrap();
    let second = get(addr, "/api/catalog?max_age=30").await.unwrap();
    assert_eq!((first.0, first.1.as_str()), (200, "MISS"));
    assert_eq!((second.0, second.1.as_str()), (200, "HIT"));
    let scan = |pattern: &str| {
        p.ok(&[
            "exec",
            &redis_box,
            "redis-cli",
            "--scan",
            "--pattern",
            pattern,
        ])
    };
    let cached = scan("gatehouse:cache:*");
    assert!(
        cached.contains("/api/catalog?max_age=30"),
        "the cache entry in Redis: {cached:?}"
    );
    // The rate limit's state lives until its bucket is full again (about 2 s at 50/s): look
    // right after a request, as often as it takes.
    eventually(
        "the shared rate limit's state is in Redis",
        START,
        || async {
            get(addr, "/api/products").await?;
            (!scan("gatehouse:rl:per-client:*").is_empty()).then_some(())
        },
    )
    .await;

    compose(&["down"]);
    let left = p.ok(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    assert!(left.is_empty(), "compose down left containers: {left}");
}
