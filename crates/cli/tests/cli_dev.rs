//! The CLI against a real in-process cluster: three nodes (`runnel dev`'s own
//! `DevCluster`) on free loopback ports in a temporary directory, and the command
//! functions run exactly as `runnel` runs them (parsed from argv, output captured):
//! stream create/list/describe, put, get --output json round trip, positions, errors,
//! the dev demonstration's byte-for-byte read back, cluster nodes.
#![cfg(not(madsim))]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use clap::Parser;
use runnel_cli::dev::{DevCluster, NodePlan, demo};
use runnel_cli::{Cli, CliError, run};
use serde_json::Value;

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

/// Runs `runnel ARGS` against the cluster; the captured standard output.
async fn runnel(endpoints: &str, args: &[&str]) -> Result<String, CliError> {
    let argv = ["runnel", "--endpoint", endpoints, "--deadline", "30s"]
        .into_iter()
        .chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).map_err(|e| CliError::Usage(e.to_string()))?;
    let mut out = Vec::new();
    run(cli, &mut out).await?;
    Ok(String::from_utf8(out).expect("the CLI writes UTF-8"))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_against_a_three_node_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan: Vec<NodePlan> = (1..=3)
        .map(|id| NodePlan {
            node_id: id,
            grpc: free_addr(),
            admin: "127.0.0.1:0".parse().expect("an address"),
        })
        .collect();
    let cluster = DevCluster::start(dir.path(), &plan)
        .await
        .expect("nodes start");
    let client = cluster.client().expect("client");
    let result = tokio::time::timeout(Duration::from_secs(240), async {
        cluster.wait_up(&client).await.expect("every node up");
        let ep = cluster.endpoints.join(",");
        let ep = ep.as_str();

        let created = runnel(
            ep,
            &[
                "stream",
                "create",
                "t1",
                "--shards",
                "2",
                "--retention",
                "2h",
            ],
        )
        .await
        .expect("stream create");
        assert!(
            created.contains("ACTIVE") && created.contains("retention    2h"),
            "{created}"
        );

        let list = runnel(ep, &["stream", "list", "-o", "json"])
            .await
            .expect("list");
        let list: Value = serde_json::from_str(&list).expect("json");
        assert!(
            list.as_array()
                .is_some_and(|a| a.iter().any(|s| s["name"] == "t1")),
            "{list}"
        );

        let d = runnel(ep, &["stream", "describe", "t1", "-o", "json"])
            .await
            .expect("describe");
        let d: Value = serde_json::from_str(&d).expect("json");
        assert_eq!(d["status"], "ACTIVE");
        assert_eq!(d["replication_factor"], 3);
        let shards = d["shards"].as_array().expect("shards");
        assert_eq!(shards.len(), 2);
        assert!(
            shards
                .iter()
                .all(|s| s["replicas"].as_array().is_some_and(|r| r.len() == 3))
        );

        let put = runnel(
            ep,
            &["put", "t1", "hello", "wörld", "--key", "k", "-o", "json"],
        )
        .await
        .expect("put");
        let put = json_lines(&put);
        assert_eq!(put.len(), 2);
        assert_eq!(put[0]["shard_id"], put[1]["shard_id"], "one key, one shard");

        let got = runnel(ep, &["get", "t1", "-o", "json"]).await.expect("get");
        let got = json_lines(&got);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0]["data"], "hello");
        assert_eq!(got[1]["data"], "wörld");
        assert_eq!(got[0]["partition_key"], "k");
        assert_eq!(got[0]["sequence_number"], put[0]["sequence_number"]);
        assert!(
            got[0]["arrival_time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );

        let shard = got[0]["shard_id"].as_str().expect("shard id");
        let after = format!(
            "after-seq={}",
            got[0]["sequence_number"].as_str().expect("seq")
        );
        let rest = runnel(
            ep,
            &[
                "get", "t1", "--shard", shard, "--from", &after, "-o", "json",
            ],
        )
        .await
        .expect("get after");
        let rest = json_lines(&rest);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0]["data"], "wörld");

        let limited = runnel(ep, &["get", "t1", "--limit", "1", "-o", "json"])
            .await
            .expect("limit");
        assert_eq!(json_lines(&limited).len(), 1);

        let missing = runnel(ep, &["get", "nosuch"])
            .await
            .expect_err("no such stream");
        assert!(missing.hint().is_some(), "{missing}");
        assert_eq!(missing.exit_code(), 1);

        let d = demo(&client, 300, 3)
            .await
            .expect("the demo reads back byte-identical");
        assert_eq!((d.written, d.verified), (300, 300));

        let nodes = runnel(ep, &["cluster", "nodes", "-o", "json"])
            .await
            .expect("nodes");
        let nodes: Value = serde_json::from_str(&nodes).expect("json");
        assert_eq!(nodes.as_array().map(Vec::len), Some(3));

        // The benchmarks count every record they were asked for, with latencies: a
        // small --in-flight makes the producer wait for room, --rate for its send times.
        for (cmd, stream, extra) in [
            ("produce", "b1", &["--in-flight", "7", "--rate", "2000"][..]),
            ("e2e", "b2", &[][..]),
        ] {
            let args = [
                "bench",
                cmd,
                "--stream",
                stream,
                "--shards",
                "2",
                "--records",
                "600",
                "--record-size",
                "100",
                "-o",
                "json",
            ];
            let out = runnel(ep, &[&args[..], extra].concat())
                .await
                .unwrap_or_else(|e| panic!("bench {cmd}: {e}"));
            let v: Value = serde_json::from_str(&out).expect("bench json");
            for phase in v["phases"].as_array().expect("phases") {
                assert_eq!(phase["records"], 600, "bench {cmd}: {phase}");
                assert_eq!(phase["errors"], 0, "bench {cmd}: {phase}");
                assert!(phase["latency_ms"]["p50"].as_f64() > Some(0.0), "{phase}");
            }
        }

        runnel(ep, &["stream", "delete", "t1"])
            .await
            .expect("delete");
    })
    .await;
    cluster.shutdown().await;
    result.expect("the test finished in time");
}
