//! What the image gives a container, read from the Dockerfile's last stage:
//! its environment, user, working directory, entrypoint and command, and
//! where it puts the `ordermesh` binary. A kubelet starts a container from
//! these unless the pod spec overrides them; the test has no image (no
//! container engine here), so it builds the same start from the Dockerfile.

use std::collections::BTreeMap;
use std::path::Path;

pub struct Image {
    pub env: BTreeMap<String, String>,
    pub user: u32,
    pub group: u32,
    pub workdir: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Where `COPY` puts the ordermesh binary, e.g. /usr/local/bin/ordermesh.
    pub binary: String,
}

impl Image {
    pub fn from_dockerfile(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("read the Dockerfile");
        // Continuation lines joined, comments dropped.
        let joined = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("\\\n", " ");
        let last_stage = joined
            .rsplit_once("\nFROM ")
            .map_or(joined.as_str(), |(_, stage)| stage);
        let mut image = Image {
            env: BTreeMap::new(),
            user: 0,
            group: 0,
            workdir: "/".to_owned(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            binary: String::new(),
        };
        for line in last_stage.lines() {
            let Some((instruction, rest)) = line.trim().split_once(' ') else {
                continue;
            };
            let rest = rest.trim();
            match instruction {
                "ENV" => {
                    for pair in rest.split_whitespace() {
                        let (name, value) = pair.split_once('=').expect("ENV NAME=value");
                        image.env.insert(name.to_owned(), value.to_owned());
                    }
                }
                "USER" => {
                    let (user, group) = rest.split_once(':').unwrap_or((rest, rest));
                    image.user = user.parse().expect("a numeric USER");
                    image.group = group.parse().expect("a numeric group");
                }
                "WORKDIR" => rest.clone_into(&mut image.workdir),
                "ENTRYPOINT" => image.entrypoint = exec_form(rest),
                "CMD" => image.cmd = exec_form(rest),
                "COPY" => {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    if let [.., source, dest] = words.as_slice()
                        && source.ends_with("/ordermesh")
                    {
                        (*dest).clone_into(&mut image.binary);
                    }
                }
                _ => {}
            }
        }
        assert!(
            !image.binary.is_empty() && !image.entrypoint.is_empty(),
            "the Dockerfile's last stage copies no ordermesh binary or has no ENTRYPOINT"
        );
        image
    }
}

/// `["a", "b"]`, the JSON (exec) form the Dockerfile uses.
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("{rest}: only the exec form is supported ({e})"))
}
