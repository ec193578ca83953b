#!/usr/bin/env bash
# Idempotent: a single-node OpenSearch with the k-NN plugin, assembled from Maven Central
# artifacts only (docs/opensearch.md), in the folder `serverctl opensearch home` prints: a
# root-owned /var/cache/visual-search/opensearch/ when run as root (the node's unprivileged
# user may not be able to enter the checkout), else .cache/opensearch/ in the checkout.
#   - org.opensearch.distribution.integ-test-zip:opensearch (zip): the minimal distribution;
#   - modules/lang-painless from its published jars (k-NN extends lang-painless, which the
#     minimal distribution lacks), with a descriptor and security policy written here;
#   - org.opensearch.plugin:opensearch-knn (zip), installed with bin/opensearch-plugin.
# Every download is checked against the .sha512 Maven Central publishes beside it (.sha1
# where no .sha512 exists) and kept in .cache/opensearch/downloads.
# Env: OPENSEARCH_VERSION (default 2.19.1: the only 2.19.x with a k-NN zip on Maven
# Central), MAVEN_REPO (default Maven Central), OPENSEARCH_JAVA_HOME (default: Java 17).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION="${OPENSEARCH_VERSION:-2.19.1}"
KNN_VERSION="$VERSION.0"
REPO="${MAVEN_REPO:-https://repo1.maven.org/maven2}"
DOWNLOADS="$PWD/.cache/opensearch/downloads"
HOME_DIR=$(OPENSEARCH_VERSION="$VERSION" python3 scripts/serverctl opensearch home)
# Written last: its presence means the install is complete and matches these coordinates.
STAMP="$HOME_DIR/.installed-from-maven"
WANT_STAMP="opensearch=$VERSION opensearch-knn=$KNN_VERSION lang-painless=$VERSION"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
  echo "OpenSearch $VERSION with opensearch-knn $KNN_VERSION already installed in $HOME_DIR"
  exit 0
fi

# The same Java the node will run with (serverctl prefers Java 17 over a newer JAVA_HOME).
JAVA_HOME=$(python3 scripts/serverctl opensearch java-home)
export JAVA_HOME

# fetch GROUP ARTIFACT VERSION EXT: prints the path of the verified artifact in DOWNLOADS.
fetch() {
  local group="$1" artifact="$2" version="$3" ext="$4"
  local name="$artifact-$version.$ext"
  local url="$REPO/${group//.//}/$artifact/$version/$name"
  local dst="$DOWNLOADS/$name"
  mkdir -p "$DOWNLOADS"
  local algo want=""
  # The published checksum is cached beside the artifact, so a re-run works offline.
  for algo in sha512 sha1; do
    if [[ -s "$dst.$algo" ]]; then want=$(cat "$dst.$algo"); break; fi
    if want=$(curl -fsSL --retry 3 --max-time 60 "$url.$algo" 2>/dev/null); then
      # Some checksum files carry "<hash>  <name>": keep the hash only.
      want="${want%% *}"
      echo "$want" > "$dst.$algo"
      break
    fi
    want=""
  done
  if [[ -z "$want" ]]; then
    echo "error: no .sha512 or .sha1 published for $group:$artifact:$version ($ext) at $url" >&2
    return 1
  fi
  if [[ -f "$dst" && "$("${algo}sum" "$dst" | cut -d' ' -f1)" == "$want" ]]; then
    echo "$dst"
    return 0
  fi
  echo "downloading $group:$artifact:$version ($ext)" >&2
  if ! curl -fsSL --retry 3 --max-time 600 -o "$dst.part" "$url"; then
    echo "error: download failed: $group:$artifact:$version ($ext) from $url" >&2
    rm -f "$dst.part"
    return 1
  fi
  local got
  got=$("${algo}sum" "$dst.part" | cut -d' ' -f1)
  if [[ "$got" != "$want" ]]; then
    echo "error: $algo mismatch for $group:$artifact:$version ($ext): published $want, downloaded $got" >&2
    rm -f "$dst.part"
    return 1
  fi
  mv "$dst.part" "$dst"
  echo "  $algo verified: $name" >&2
  echo "$dst"
}

DIST_ZIP=$(fetch org.opensearch.distribution.integ-test-zip opensearch "$VERSION" zip)
KNN_ZIP=$(fetch org.opensearch.plugin opensearch-knn "$KNN_VERSION" zip)
PAINLESS_POM=$(fetch org.opensearch.plugin lang-painless "$VERSION" pom)

# Assemble in a scratch folder of this run and rename at the end, so an interrupted run
# leaves no half-installed home behind and two checkouts sharing the system folder do not
# assemble into the same place.
INSTALL_ROOT=$(dirname "$HOME_DIR")
(umask 022 && mkdir -p "$INSTALL_ROOT")
WORK=$(mktemp -d "$INSTALL_ROOT/.partial-$VERSION-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
rm -rf "$HOME_DIR"
unzip -q "$DIST_ZIP" -d "$WORK"
mv "$WORK/opensearch-$VERSION" "$WORK/home"
HOME_WORK="$WORK/home"

# lang-painless's own jar plus the direct compile dependencies its pom names (antlr4-runtime,
# the asm jars, opensearch-scripting-painless-spi); not the spi's transitive
# org.opensearch:opensearch, which is lib/opensearch-*.jar already.
PAINLESS_DIR="$HOME_WORK/modules/lang-painless"
mkdir -p "$PAINLESS_DIR"
PAINLESS_JAR=$(fetch org.opensearch.plugin lang-painless "$VERSION" jar)
cp "$PAINLESS_JAR" "$PAINLESS_DIR/"
python3 - "$PAINLESS_POM" > "$WORK/painless-deps.txt" <<'EOF'
import sys
import xml.etree.ElementTree as ET
ns = {"m": "http://maven.apache.org/POM/4.0.0"}
for dep in ET.parse(sys.argv[1]).getroot().findall("m:dependencies/m:dependency", ns):
    scope = dep.findtext("m:scope", "compile", ns)
    if scope in ("compile", "runtime"):
        print(dep.findtext("m:groupId", namespaces=ns), dep.findtext("m:artifactId", namespaces=ns),
              dep.findtext("m:version", namespaces=ns))
EOF
if [[ ! -s "$WORK/painless-deps.txt" ]]; then
  echo "error: no dependencies read from $PAINLESS_POM" >&2
  exit 1
fi
while read -r group artifact version; do
  jar=$(fetch "$group" "$artifact" "$version" jar)
  cp "$jar" "$PAINLESS_DIR/"
done < "$WORK/painless-deps.txt"
# The keys OpenSearch $VERSION's PluginInfo reads (an unknown key is an error); the values
# are those of the lang-painless module in OpenSearch's own distributions.
cat > "$PAINLESS_DIR/plugin-descriptor.properties" <<EOF
description=An easy, safe and fast scripting language for OpenSearch
version=$VERSION
name=lang-painless
classname=org.opensearch.painless.PainlessPlugin
java.version=11
opensearch.version=$VERSION
custom.foldername=
extended.plugins=
has.native.controller=false
EOF
# Painless compiles scripts to classes at run time: it needs its own class loaders.
cat > "$PAINLESS_DIR/plugin-security.policy" <<'EOF'
grant {
  permission java.lang.RuntimePermission "createClassLoader";
  permission java.lang.RuntimePermission "getClassLoader";
};
EOF

# --batch accepts the extra permissions k-NN's policy asks for (native library loading,
# accessDeclaredMembers, /proc/cpuinfo) without a prompt.
OPENSEARCH_PATH_CONF="$HOME_WORK/config" "$HOME_WORK/bin/opensearch-plugin" install --batch "file://$KNN_ZIP"
"$HOME_WORK/bin/opensearch-plugin" list | grep -qx opensearch-knn \
  || { echo "error: opensearch-knn not listed by opensearch-plugin after install" >&2; exit 1; }

# The node runs as an unprivileged user: everything here must be readable by others.
chmod -R a+rX "$HOME_WORK"
echo "$WANT_STAMP" > "$HOME_WORK/.installed-from-maven"
# Another checkout sharing the folder may have finished first: its complete install is as good.
if ! mv -T "$HOME_WORK" "$HOME_DIR" 2>/dev/null; then
  if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT_STAMP" ]]; then
    echo "error: could not move the install into $HOME_DIR" >&2
    exit 1
  fi
  echo "OpenSearch $VERSION was installed in $HOME_DIR by another run meanwhile; using it"
  exit 0
fi
echo "installed OpenSearch $VERSION with opensearch-knn $KNN_VERSION in $HOME_DIR"
