/**
 * membrane's configuration: one typed object, built once at start from defaults, then the
 * environment, then flags (a flag wins over the environment, which wins over the default), and
 * handed down to every part. This file is the only one that reads process.env (scripts/lint.ts
 * checks it); the CLI entry and the agent daemon call `loadConfig` and pass the result on.
 *
 *   SETTINGS (name, environment variable, flag, default, what it does)
 *      │ buildConfig({ env, flags })  — a bad value is a CONFIG_INVALID error naming the setting
 *      ▼
 *   MembraneConfig ─► CLI commands, lab (paths, child processes: configEnv), agent (compose)
 *
 * `membrane up --help` and the README print SETTINGS (settingsHelp), so every setting is listed
 * with its default in one place.
 */
import { join } from 'node:path';
import { MembraneError } from './errors.ts';

export type DnsRejectResponseCode = 'refused' | 'nameError';
/** Cilium's --routing-mode values; tunnel is the default, as in Cilium. */
export const ROUTING_MODES = ['tunnel', 'native'] as const;
export type RoutingMode = (typeof ROUTING_MODES)[number];

export interface MembraneConfig {
  /** lab name: prefix of every namespace, link, BPF pin directory and state directory */
  lab: string;
  /** where the lab keeps its runtime state */
  stateDir: string;
  /** BPF filesystem directory that holds the labs' pin directories */
  bpffs: string;
  /** agent log level (pino: trace, debug, info, warn, error, fatal) */
  logLevel: string;
  /** node the CLI talks to */
  node: string;
  /** Hubble metrics the agent serves (Cilium's --hubble-metrics) */
  hubbleMetrics: string;
  /** port of the Hubble metrics server in each node namespace */
  hubbleMetricsPort: number;
  /** Hubble metrics in OpenMetrics when the scraper asks for it, with exemplars (Cilium's --enable-hubble-open-metrics) */
  hubbleMetricsOpenMetrics: boolean;
  /** port of the agent's cilium_* metrics in each node namespace (Cilium's --prometheus-serve-addr :9962) */
  agentMetricsPort: number;
  /** Hubble's flow ring capacity, 2^n − 1 (Cilium's --hubble-event-buffer-capacity) */
  hubbleEventBufferCapacity: number;
  /** plain text on Hubble's TCP 4244 instead of mutual TLS (Cilium's --hubble-disable-tls) */
  hubbleDisableTls: boolean;
  /** TCP port of the lab's Hubble Relay on the lab host's loopback (Cilium's relay :4245); 0: any free port */
  hubbleRelayPort: number;
  /** plain text on the Relay's port instead of mutual TLS (Cilium's relay --disable-server-tls) */
  hubbleRelayDisableServerTls: boolean;
  /** Hubble server certificate (PEM); none: the lab's (Cilium's --hubble-tls-cert-file) */
  hubbleTlsCertFile: string | undefined;
  /** its private key; none: the lab's (Cilium's --hubble-tls-key-file) */
  hubbleTlsKeyFile: string | undefined;
  /** CAs that sign Hubble clients' certificates, comma-separated; none: the lab's Hubble CA (Cilium's --hubble-tls-client-ca-files) */
  hubbleTlsClientCaFiles: string | undefined;
  /** OTLP/HTTP collector for the HTTP proxy's spans; none: no spans */
  otlpEndpoint: string | undefined;
  /** pods' resolv.conf names the lab DNS pod's own address instead of the kube-dns ClusterIP */
  labDnsPodIp: boolean;
  /** DNS proxy: lowest TTL an allowed answer keeps its IPs for, in seconds */
  tofqdnsMinTTL: number;
  /** DNS proxy: most IPs remembered per name and endpoint */
  tofqdnsMaxIPsPerHostname: number;
  /** DNS proxy: how long an expired IP stays allowed after its last connection closed, in ms */
  tofqdnsIdleConnectionGraceMs: number;
  /** DNS proxy: how often expired names are collected, in ms */
  tofqdnsGcMs: number;
  /** DNS proxy: the answer to a refused query */
  tofqdnsDnsRejectResponseCode: DnsRejectResponseCode;
  /** DNS proxy: hold answers until the datapath has their IPs (off only to show what it prevents) */
  dnsProxyHold: boolean;
  /**
   * The HTTP/TLS proxies run in their own supervised process fed by the agent (Cilium's
   * --external-envoy-proxy); undefined: the lab runs them so, an agent started alone runs them inside
   */
  externalEnvoyProxy: boolean | undefined;
  /** Hubble server for `membrane observe` (hubble's HUBBLE_SERVER); default: the node's socket */
  hubbleServer: string | undefined;
  /** `membrane observe` connects with TLS (hubble's HUBBLE_TLS, --tls) */
  hubbleTls: boolean;
  /** CAs `membrane observe` trusts, comma-separated (hubble's HUBBLE_TLS_CA_CERT_FILES) */
  hubbleTlsCaCertFiles: string | undefined;
  /** client certificate of `membrane observe` (hubble's HUBBLE_TLS_CLIENT_CERT_FILE) */
  hubbleTlsClientCertFile: string | undefined;
  /** its key (hubble's HUBBLE_TLS_CLIENT_KEY_FILE) */
  hubbleTlsClientKeyFile: string | undefined;
  /** server name `membrane observe` verifies (hubble's HUBBLE_TLS_SERVER_NAME) */
  hubbleTlsServerName: string | undefined;
  /** datapath: events per second each sender may emit (an endpoint's own packets; packets to it from outside); 0: no limit */
  bpfEventsDefaultRateLimit: number;
  /** datapath: burst of each sender's event budget */
  bpfEventsDefaultBurstLimit: number;
  /** Cilium's --policy-audit-mode: every endpoint without its own PolicyAuditMode option lets L3/L4 policy drops pass, reported as AUDIT */
  policyAuditMode: boolean;
  /** no colours in CLI output (https://no-color.org) */
  noColor: boolean;
  /** how the lab's agents share state: memory (one node) or etcd; default: etcd for more than one node */
  kvstore: 'memory' | 'etcd' | undefined;
  /** etcd endpoints, comma-separated (Cilium's --kvstore etcd --kvstore-opt etcd.address); none: memory */
  kvstoreEndpoint: string | undefined;
  /** etcd TLS: CA certificate, client certificate and its key (files) */
  kvstoreCa: string | undefined;
  kvstoreCert: string | undefined;
  kvstoreKey: string | undefined;
  /** seconds a node's kvstore keys outlive its last keepalive (Cilium's --kvstore-lease-ttl); default 900, the lab's 30 */
  kvstoreLeaseTTL: number | undefined;
  /** a directory: the agent writes a V8 CPU profile of its run there when it stops (src/agent/cpu-profile.ts) */
  agentCpuProfile: string | undefined;
  /** seconds between identity GC passes on this node (Cilium operator's --identity-gc-interval); default 60, the lab's 15 */
  identityGcInterval: number | undefined;
  /** host mode (`membrane agent`): the node's pod CIDR, IPv4, its first address the pods' gateway (Cilium's --ipv4-native-routing-cidr / node podCIDR) */
  podCidr: string | undefined;
  /** host mode: devices that carry traffic from outside the pods, comma-separated (Cilium's --devices); none: no device is attached */
  devices: string | undefined;
  /** host mode: the node's own addresses (reserved:host), comma-separated; default: the pod gateway only */
  nodeAddresses: string | undefined;
  /** host mode: the DNS server containers use (the address the CNI result names; the DNS proxy judges queries to it) */
  clusterDnsIp: string | undefined;
  /**
   * how pod traffic crosses nodes (Cilium's --routing-mode): tunnel, VXLAN (UDP 8472) with the
   * source identity in the VNI; native, routes on the underlay, the source identity from the ipcache
   */
  routingMode: RoutingMode;
  /** Cilium's enable-ipv6: pods get IPv6 addresses, the datapath enforces IPv6 (else drops it, 139) */
  enableIPv6: boolean;
  /**
   * Cilium's --monitor-aggregation, as the datapath implements it: medium (medium, max, maximum,
   * 3, 4) traces a connection's packets where conntrack reports them; low (low, lowest, 1, 2)
   * every packet, never on receive (bpf/README.md "Monitor aggregation")
   */
  monitorAggregation: 'medium' | 'low';
  /** Cilium's --monitor-aggregation-interval, in seconds: how often medium reports an active connection again */
  monitorAggregationInterval: number;
  /**
   * the kernel's BPF run-time stats (BPF_ENABLE_STATS) while the agent runs: each program's run
   * count and time, at two clock reads per program run on every program of the machine; off by
   * default, as Cilium leaves them (kernel.bpf_stats_enabled)
   */
  bpfRunTimeStats: boolean;
  /** transparent encryption between nodes (Cilium's --enable-wireguard / encryption.type): wireguard or disabled */
  encryption: 'disabled' | 'wireguard';
  /** node-to-node traffic through WireGuard too (Cilium's --encrypt-node) */
  encryptionNode: boolean;
  /** drop pod traffic between strict-CIDR addresses that would leave unencrypted (Cilium's --enable-encryption-strict-mode) */
  encryptionStrict: boolean;
  /** drop a pod's packet from another node that did not come through WireGuard (Cilium's --enable-encryption-strict-mode-ingress) */
  encryptionStrictIngress: boolean;
  /** the strict CIDR (Cilium's --encryption-strict-mode-cidr) */
  encryptionStrictModeCidr: string;
  /**
   * The OpenTelemetry SDK's standard variables (every OTEL_* one, e.g. OTEL_EXPORTER_OTLP_ENDPOINT,
   * OTEL_SERVICE_NAME), kept as given: the OTLP exporter reads them as an SDK would
   * (src/proxy/http/otlp.ts otlpOptionsFromEnv) and judges them there.
   */
  otel: Readonly<Record<string, string>>;
  /** AI filter: the most request-body bytes held and read per call (larger: 413) */
  aiMaxBodyBytes: number;
}

export type SettingName = Exclude<keyof MembraneConfig, 'otel'>;

export interface Setting {
  name: SettingName;
  /** environment variable */
  env: string;
  /** command-line flag (`membrane up` and the agent daemon take the lab and agent settings) */
  flag: string;
  /** who reads it: the lab (`membrane up`), the agents, or the CLI only */
  scope: 'lab' | 'agent' | 'cli';
  /** the default as printed; `stateDir` depends on `lab` */
  default: string;
  help: string;
  parse(raw: string): MembraneConfig[SettingName];
}

/** The agent's default Hubble metrics: every built-in handler, pods as source/destination context. */
export const DEFAULT_HUBBLE_METRICS = 'dns:query;sourceContext=pod|ip;destinationContext=pod|dns|ip http:sourceContext=pod|ip;destinationContext=pod|dns|ip drop:sourceContext=pod|ip;destinationContext=pod|dns|ip tcp flow port-distribution policy:sourceContext=pod|ip;destinationContext=pod|dns|ip';

const LAB_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

function bad(s: Pick<Setting, 'name' | 'env' | 'flag'>, raw: string, want: string): MembraneError {
  return new MembraneError('CONFIG_INVALID', `${s.name} (${s.flag} / ${s.env}): "${raw}" is not ${want}`, { hint: `set ${want}, or unset ${s.env} for the default` });
}

function text(this: Setting, raw: string): string {
  if (raw.trim() === '') throw bad(this, raw, 'a non-empty value');
  return raw;
}
function wholeNumber(max: number) {
  return function (this: Setting, raw: string): number {
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n > max) throw bad(this, raw, `a whole number 0..${max}`);
    return n;
  };
}
function flag(this: Setting, raw: string): boolean {
  if (raw === '1' || raw === 'true') return true;
  if (raw === '0' || raw === 'false') return false;
  throw bad(this, raw, 'true or false (1 or 0)');
}

export const SETTINGS: readonly Setting[] = [
  {
    name: 'lab', scope: 'lab', env: 'MEMBRANE_LAB', flag: '--lab', default: 'mbr',
    help: 'lab name: prefix of every namespace, link, BPF pin and state directory (several labs can run side by side)',
    parse(raw) { if (!LAB_NAME.test(raw)) throw bad(this, raw, 'a name of 1-32 letters, digits, _, . and -'); return raw; },
  },
  { name: 'stateDir', scope: 'lab', env: 'MEMBRANE_STATE_DIR', flag: '--state-dir', default: '/run/membrane/<lab>', help: 'runtime state of the lab (sockets, logs, pid files, stores)', parse: text },
  { name: 'bpffs', scope: 'lab', env: 'MEMBRANE_BPFFS', flag: '--bpffs', default: '/sys/fs/bpf/membrane', help: 'directory on the BPF filesystem for the pinned maps and programs', parse: text },
  {
    name: 'logLevel', scope: 'agent', env: 'MEMBRANE_LOG_LEVEL', flag: '--log-level', default: 'info', help: `agent log level (${LOG_LEVELS.join(', ')})`,
    parse(raw) { if (!LOG_LEVELS.includes(raw)) throw bad(this, raw, `one of ${LOG_LEVELS.join(', ')}`); return raw; },
  },
  { name: 'node', scope: 'cli', env: 'MEMBRANE_NODE', flag: '--node', default: 'node1', help: 'node whose agent the CLI talks to', parse: text },
  { name: 'hubbleMetrics', scope: 'agent', env: 'MEMBRANE_HUBBLE_METRICS', flag: '--hubble-metrics', default: DEFAULT_HUBBLE_METRICS, help: "Hubble metrics and their options (Cilium's --hubble-metrics)", parse: text },
  { name: 'hubbleMetricsPort', scope: 'agent', env: 'MEMBRANE_HUBBLE_METRICS_PORT', flag: '--hubble-metrics-port', default: '9965', help: 'port of the Hubble metrics server (Prometheus text) in each node', parse: wholeNumber(65535) },
  { name: 'hubbleMetricsOpenMetrics', scope: 'agent', env: 'MEMBRANE_HUBBLE_METRICS_OPENMETRICS', flag: '--enable-hubble-open-metrics', default: 'false', help: "true: Hubble metrics in OpenMetrics to scrapers that ask, with httpV2 exemplars (Cilium's --enable-hubble-open-metrics)", parse: flag },
  { name: 'agentMetricsPort', scope: 'agent', env: 'MEMBRANE_AGENT_METRICS_PORT', flag: '--agent-metrics-port', default: '9962', help: "port of the agent's cilium_* metrics in each node (Cilium's --prometheus-serve-addr)", parse: wholeNumber(65535) },
  {
    name: 'hubbleEventBufferCapacity', scope: 'agent', env: 'MEMBRANE_HUBBLE_EVENT_BUFFER_CAPACITY', flag: '--hubble-event-buffer-capacity', default: '4095',
    help: "Hubble's flow ring capacity, 2^n - 1 (Cilium's --hubble-event-buffer-capacity)", parse: wholeNumber(1_048_575),
  },
  { name: 'hubbleDisableTls', scope: 'agent', env: 'MEMBRANE_HUBBLE_DISABLE_TLS', flag: '--hubble-disable-tls', default: 'false', help: "true: plain text on Hubble's TCP 4244 instead of mutual TLS (Cilium's --hubble-disable-tls)", parse: flag },
  { name: 'hubbleRelayPort', scope: 'lab', env: 'MEMBRANE_HUBBLE_RELAY_PORT', flag: '--hubble-relay-port', default: '4245', help: "TCP port of the lab's Hubble Relay on 127.0.0.1 (multi-node labs; 0: any free port)", parse: wholeNumber(65535) },
  { name: 'hubbleRelayDisableServerTls', scope: 'lab', env: 'MEMBRANE_HUBBLE_RELAY_DISABLE_SERVER_TLS', flag: '--hubble-relay-disable-server-tls', default: 'false', help: "true: plain text on the Relay's port instead of mutual TLS (Cilium's relay --disable-server-tls)", parse: flag },
  { name: 'hubbleTlsCertFile', scope: 'agent', env: 'MEMBRANE_HUBBLE_TLS_CERT_FILE', flag: '--hubble-tls-cert-file', default: "(the lab's)", help: "Hubble server certificate, PEM, leaf first (Cilium's --hubble-tls-cert-file)", parse: text },
  { name: 'hubbleTlsKeyFile', scope: 'agent', env: 'MEMBRANE_HUBBLE_TLS_KEY_FILE', flag: '--hubble-tls-key-file', default: "(the lab's)", help: "its private key, mode 0600 or stricter (Cilium's --hubble-tls-key-file)", parse: text },
  { name: 'hubbleTlsClientCaFiles', scope: 'agent', env: 'MEMBRANE_HUBBLE_TLS_CLIENT_CA_FILES', flag: '--hubble-tls-client-ca-files', default: "(the lab's Hubble CA)", help: "CAs that sign Hubble clients' certificates, comma-separated (Cilium's --hubble-tls-client-ca-files)", parse: text },
  { name: 'otlpEndpoint', scope: 'agent', env: 'MEMBRANE_OTLP_ENDPOINT', flag: '--otlp-endpoint', default: '(none)', help: "OTLP/HTTP collector URL for the HTTP proxy's spans", parse: text },
  { name: 'labDnsPodIp', scope: 'lab', env: 'MEMBRANE_LAB_DNS_POD_IP', flag: '--lab-dns-pod-ip', default: '0', help: "1: pods' resolv.conf names the DNS pod's address instead of the kube-dns ClusterIP (datapaths without ClusterIP translation)", parse: flag },
  { name: 'tofqdnsMinTTL', scope: 'agent', env: 'MEMBRANE_TOFQDNS_MIN_TTL', flag: '--tofqdns-min-ttl', default: '0', help: 'lowest TTL in seconds for IPs learned from an allowed DNS answer', parse: wholeNumber(604_800) },
  { name: 'tofqdnsMaxIPsPerHostname', scope: 'agent', env: 'MEMBRANE_TOFQDNS_MAX_IPS_PER_HOSTNAME', flag: '--tofqdns-max-ips-per-hostname', default: '50', help: 'most IPs kept per DNS name and endpoint', parse: wholeNumber(100_000) },
  { name: 'tofqdnsIdleConnectionGraceMs', scope: 'agent', env: 'MEMBRANE_TOFQDNS_IDLE_CONNECTION_GRACE_MS', flag: '--tofqdns-idle-connection-grace-ms', default: '0', help: 'ms an expired IP stays allowed after its last connection', parse: wholeNumber(86_400_000) },
  { name: 'tofqdnsGcMs', scope: 'agent', env: 'MEMBRANE_TOFQDNS_GC_MS', flag: '--tofqdns-gc-ms', default: '1000', help: 'ms between collections of expired DNS names', parse: wholeNumber(3_600_000) },
  {
    name: 'tofqdnsDnsRejectResponseCode', scope: 'agent', env: 'MEMBRANE_TOFQDNS_DNS_REJECT_RESPONSE_CODE', flag: '--tofqdns-dns-reject-response-code', default: 'refused',
    help: 'answer to a DNS query the policy refuses: refused or nameError',
    parse(raw) { if (raw !== 'refused' && raw !== 'nameError') throw bad(this, raw, 'refused or nameError'); return raw; },
  },
  {
    name: 'externalEnvoyProxy', scope: 'agent', env: 'MEMBRANE_EXTERNAL_ENVOY_PROXY', flag: '--external-envoy-proxy', default: '(1 in the lab)',
    help: "run the HTTP/TLS and DNS proxies in their own supervised process, so an agent restart resets no L7 connection and stops no name resolution (Cilium's --external-envoy-proxy and standalone DNS proxy)", parse: flag,
  },
  { name: 'dnsProxyHold', scope: 'agent', env: 'MEMBRANE_DNS_PROXY_HOLD', flag: '--dns-proxy-hold', default: '1', help: 'hold DNS answers until the datapath has their IPs; 0 only shows what the hold prevents', parse: flag },
  {
    name: 'kvstore', scope: 'lab', env: 'MEMBRANE_KVSTORE', flag: '--kvstore', default: '(memory for one node, etcd for more)',
    help: 'how the agents share state: memory, or etcd (the lab runs its own unless --kvstore-endpoint names one)',
    parse(raw) { if (raw !== 'memory' && raw !== 'etcd') throw bad(this, raw, 'memory or etcd'); return raw; },
  },
  { name: 'kvstoreEndpoint', scope: 'agent', env: 'MEMBRANE_KVSTORE_ENDPOINT', flag: '--kvstore-endpoint', default: "(none; the lab's etcd in a multi-node lab)", help: 'etcd endpoints, comma-separated: http(s)://host:port or unix:/path (the lab accepts unix: only)', parse: text },
  { name: 'kvstoreCa', scope: 'agent', env: 'MEMBRANE_KVSTORE_CA', flag: '--kvstore-ca', default: '(none)', help: "etcd's CA certificate (PEM file); needed for https://", parse: text },
  { name: 'kvstoreCert', scope: 'agent', env: 'MEMBRANE_KVSTORE_CERT', flag: '--kvstore-cert', default: '(none)', help: 'client certificate for etcd (PEM file; etcd --client-cert-auth)', parse: text },
  { name: 'kvstoreKey', scope: 'agent', env: 'MEMBRANE_KVSTORE_KEY', flag: '--kvstore-key', default: '(none)', help: 'its private key', parse: text },
  { name: 'kvstoreLeaseTTL', scope: 'agent', env: 'MEMBRANE_KVSTORE_LEASE_TTL', flag: '--kvstore-lease-ttl', default: "900 (the lab's: 30)", help: "seconds a node's kvstore keys outlive its last keepalive (Cilium's --kvstore-lease-ttl)", parse: wholeNumber(864_000) },
  { name: 'agentCpuProfile', scope: 'agent', env: 'MEMBRANE_AGENT_CPU_PROFILE', flag: '--agent-cpu-profile', default: '(none)', help: 'directory for a V8 CPU profile of the agent, from ready to stop (a diagnosis; the sampling costs CPU)', parse: text },
  { name: 'identityGcInterval', scope: 'agent', env: 'MEMBRANE_IDENTITY_GC_INTERVAL', flag: '--identity-gc-interval', default: "60 (the lab's: 15)", help: 'seconds between passes that free cluster identities no node uses; 0: none on this node', parse: wholeNumber(86_400) },
  {
    name: 'routingMode', scope: 'lab', env: 'MEMBRANE_ROUTING_MODE', flag: '--routing-mode', default: 'tunnel',
    help: "how pod traffic crosses nodes (Cilium's --routing-mode): tunnel, VXLAN on UDP 8472 with the source identity in the VNI; native, routes on the lab underlay, the source identity from the ipcache",
    parse(raw) {
      if (!(ROUTING_MODES as readonly string[]).includes(raw)) throw bad(this, raw, ROUTING_MODES.join(' or '));
      return raw as RoutingMode;
    },
  },
  {
    name: 'enableIPv6', scope: 'lab', env: 'MEMBRANE_ENABLE_IPV6', flag: '--enable-ipv6', default: 'false',
    help: "dual stack (Cilium's --enable-ipv6): lab pods get an IPv6 address from their node's ULA pod CIDR fd00:10:244:<node>::/64 beside IPv4, and the datapath enforces IPv6 like IPv4 (policy, conntrack, flows, ClusterIP services: dual-stack Services get an IPv6 cluster IP from fd00:10:96::/112); false: every IPv6 packet of a pod is dropped (139) with a flow. IPv6 is switched on only in the lab's pod namespaces. DNS AAAA answers, toFQDNs, HTTP rules and TLS serverNames work over IPv6 too (the L7 proxies also listen on ::1). Not over IPv6 yet: the DNS proxy for queries sent to an IPv6 server address (dropped, 180), traffic between nodes",
    parse: flag,
  },
  {
    name: 'podCidr', scope: 'agent', env: 'MEMBRANE_POD_CIDR', flag: '--pod-cidr', default: '(none; required in host mode)',
    help: 'host mode: IPv4 CIDR (/16../28) the CNI plugin takes container addresses from; its first address is the gateway on membrane_host',
    parse(raw) {
      const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(raw.trim());
      if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) < 16 || Number(m[5]) > 28) throw bad(this, raw, 'an IPv4 CIDR with a prefix length 16..28, e.g. 10.244.7.0/24');
      return raw.trim();
    },
  },
  {
    name: 'devices', scope: 'agent', env: 'MEMBRANE_DEVICES', flag: '--devices', default: '(none)',
    help: "host mode: devices that carry traffic from outside the containers, comma-separated (Cilium's --devices); the agent attaches to these and no other",
    parse(raw) {
      const list = raw.split(',').map((d) => d.trim()).filter(Boolean);
      if (!list.length || list.some((d) => !/^[A-Za-z0-9_.@-]{1,15}$/.test(d))) throw bad(this, raw, 'interface names (1-15 characters), comma-separated');
      return list.join(',');
    },
  },
  {
    name: 'nodeAddresses', scope: 'agent', env: 'MEMBRANE_NODE_ADDRESSES', flag: '--node-addresses', default: '(the pod gateway)',
    help: "host mode: this host's own IPv4 addresses (the reserved:host identity), comma-separated; the first is published as the node's address",
    parse(raw) {
      const list = raw.split(',').map((d) => d.trim()).filter(Boolean);
      if (!list.length || list.some((a) => !/^\d{1,3}(\.\d{1,3}){3}$/.test(a) || a.split('.').some((o) => Number(o) > 255))) throw bad(this, raw, 'IPv4 addresses, comma-separated');
      return list.join(',');
    },
  },
  {
    name: 'clusterDnsIp', scope: 'agent', env: 'MEMBRANE_CLUSTER_DNS_IP', flag: '--cluster-dns-ip', default: '(none)',
    help: 'host mode: the DNS server containers are told to use (CNI result `dns.nameservers`); DNS policy sends their queries through the DNS proxy',
    parse(raw) { if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(raw.trim())) throw bad(this, raw, 'an IPv4 address'); return raw.trim(); },
  },
  {
    name: 'encryption', scope: 'agent', env: 'MEMBRANE_ENCRYPTION', flag: '--encryption', default: 'disabled',
    help: "transparent encryption of pod traffic between nodes (Cilium's --enable-wireguard): wireguard (kernel device where it exists, else wireguard-go) or disabled",
    parse(raw) {
      if (raw === 'ipsec') throw new MembraneError('CONFIG_UNSUPPORTED', 'encryption (--encryption / MEMBRANE_ENCRYPTION): ipsec is not implemented', { hint: 'use --encryption wireguard' });
      if (raw !== 'wireguard' && raw !== 'disabled') throw bad(this, raw, 'wireguard or disabled');
      return raw;
    },
  },
  { name: 'encryptionNode', scope: 'agent', env: 'MEMBRANE_ENCRYPTION_NODE', flag: '--encryption-node', default: 'false', help: "true: traffic between the nodes' own addresses goes through WireGuard too (Cilium's --encrypt-node); needs --encryption wireguard", parse: flag },
  { name: 'encryptionStrict', scope: 'agent', env: 'MEMBRANE_ENCRYPTION_STRICT', flag: '--encryption-strict', default: 'false', help: "true: pod traffic inside the strict CIDR that would leave a node unencrypted (peer without a key, device down) is dropped, reason UNENCRYPTED_TRAFFIC (Cilium's --enable-encryption-strict-mode); needs --encryption wireguard", parse: flag },
  { name: 'encryptionStrictIngress', scope: 'agent', env: 'MEMBRANE_ENCRYPTION_STRICT_INGRESS', flag: '--encryption-strict-ingress', default: 'false', help: "true: a pod's packet from another node that did not arrive through WireGuard is dropped, reason UNENCRYPTED_TRAFFIC (Cilium's --enable-encryption-strict-mode-ingress): in routing mode tunnel any VXLAN that did not come out of cilium_wg0 (plain VXLAN on the underlay, even from a node's address, carries an identity nobody authenticated), in routing mode native a packet from a remote pod's address to a local pod on the underlay. Node-to-node traffic is not covered. Turning it on while nodes are still exchanging keys drops their pods' traffic until they have; needs --encryption wireguard", parse: flag },
  {
    name: 'encryptionStrictModeCidr', scope: 'agent', env: 'MEMBRANE_ENCRYPTION_STRICT_MODE_CIDR', flag: '--encryption-strict-mode-cidr', default: '10.244.0.0/16',
    help: "IPv4 CIDR whose pod-to-pod traffic strict mode keeps encrypted (Cilium's --encryption-strict-mode-cidr; default: the lab's pod range)",
    parse(raw) {
      const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(raw);
      if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32) throw bad(this, raw, 'an IPv4 CIDR a.b.c.d/n');
      return raw;
    },
  },
  {
    name: 'bpfEventsDefaultRateLimit', scope: 'agent', env: 'MEMBRANE_BPF_EVENTS_DEFAULT_RATE_LIMIT', flag: '--bpf-events-default-rate-limit', default: '1000',
    help: "events per second each sender may emit (a pod's own packets; packets to it from outside the node's pods); over it they are counted as lost; 0: no limit (Cilium's flag limits the whole node, off by default)", parse: wholeNumber(100_000_000),
  },
  {
    name: 'bpfEventsDefaultBurstLimit', scope: 'agent', env: 'MEMBRANE_BPF_EVENTS_DEFAULT_BURST_LIMIT', flag: '--bpf-events-default-burst-limit', default: '1000',
    help: "burst of each sender's event budget (Cilium's --bpf-events-default-burst-limit)", parse: wholeNumber(100_000_000),
  },
  {
    name: 'bpfRunTimeStats', scope: 'agent', env: 'MEMBRANE_BPF_RUN_TIME_STATS', flag: '--bpf-run-time-stats', default: 'false',
    help: "true: the kernel counts every BPF program's runs and run time while the agent runs (BPF_ENABLE_STATS; two clock reads per program run, on every program of the machine); off by default, as Cilium leaves kernel.bpf_stats_enabled",
    parse: flag,
  },
  {
    name: 'monitorAggregation', scope: 'agent', env: 'MEMBRANE_MONITOR_AGGREGATION', flag: '--monitor-aggregation', default: 'medium',
    help: "which packets the datapath traces (Cilium's --monitor-aggregation): medium (also max, maximum, 3, 4) a connection's first packet, a SYN, FIN or RST new in its direction, every FIN and RST, its first reply, and a packet of a direction silent in Hubble for --monitor-aggregation-interval; low (also lowest, 1, 2) every packet where it leaves its endpoint or is delivered to one. Drops and policy verdicts are never aggregated. none (every packet also as it is received) is not implemented",
    parse(raw) {
      const v = raw.trim().toLowerCase();
      if (['medium', 'max', 'maximum', '3', '4'].includes(v)) return 'medium';
      if (['low', 'lowest', '1', '2'].includes(v)) return 'low';
      if (['', 'none', 'disabled', '0'].includes(v)) {
        throw new MembraneError('CONFIG_UNSUPPORTED', `monitorAggregation (${this.flag} / ${this.env}): "${raw}" is not implemented (the datapath has no trace of a packet as it is received: from-endpoint, from-overlay, from-network)`, { hint: 'use low (every packet where it leaves its endpoint or is delivered) or medium' });
      }
      throw bad(this, raw, 'medium, max, maximum, low or lowest (or 1..4)');
    },
  },
  {
    name: 'monitorAggregationInterval', scope: 'agent', env: 'MEMBRANE_MONITOR_AGGREGATION_INTERVAL', flag: '--monitor-aggregation-interval', default: '5s',
    help: "medium monitor aggregation: an active connection's direction is traced again after this many seconds without a trace (Cilium's --monitor-aggregation-interval; 5s or 5)",
    parse(raw) {
      const m = /^(\d{1,5})s?$/.exec(raw.trim());
      const n = m ? Number(m[1]) : NaN;
      if (!(n >= 1 && n <= 3600)) throw bad(this, raw, 'whole seconds 1..3600, e.g. 5s');
      return n;
    },
  },
  {
    name: 'policyAuditMode', scope: 'agent', env: 'MEMBRANE_POLICY_AUDIT_MODE', flag: '--policy-audit-mode', default: 'false',
    help: "true: L3/L4 policy drops pass and are reported as AUDIT flows, on every endpoint without its own PolicyAuditMode (Cilium's --policy-audit-mode; `membrane endpoint config <id> PolicyAuditMode=Enabled` for one endpoint)", parse: flag,
  },
  { name: 'hubbleServer', scope: 'cli', env: 'HUBBLE_SERVER', flag: '--server', default: 'unix://<stateDir>/nodes/<node>/hubble.sock', help: 'Hubble server of `membrane observe`', parse: text },
  { name: 'hubbleTls', scope: 'cli', env: 'HUBBLE_TLS', flag: '--tls', default: 'false', help: '`membrane observe` connects with TLS', parse: flag },
  { name: 'hubbleTlsCaCertFiles', scope: 'cli', env: 'HUBBLE_TLS_CA_CERT_FILES', flag: '--tls-ca-cert-files', default: '(system roots)', help: 'CAs `membrane observe` trusts, comma-separated', parse: text },
  { name: 'hubbleTlsClientCertFile', scope: 'cli', env: 'HUBBLE_TLS_CLIENT_CERT_FILE', flag: '--tls-client-cert-file', default: '(none)', help: 'client certificate of `membrane observe` (mutual TLS)', parse: text },
  { name: 'hubbleTlsClientKeyFile', scope: 'cli', env: 'HUBBLE_TLS_CLIENT_KEY_FILE', flag: '--tls-client-key-file', default: '(none)', help: 'its private key', parse: text },
  { name: 'hubbleTlsServerName', scope: 'cli', env: 'HUBBLE_TLS_SERVER_NAME', flag: '--tls-server-name', default: '(the server address)', help: 'server name `membrane observe` verifies', parse: text },
  { name: 'noColor', scope: 'cli', env: 'NO_COLOR', flag: '--no-color', default: '(unset)', help: 'no colours in CLI output when set to anything', parse: () => true },
  { name: 'aiMaxBodyBytes', scope: 'agent', env: 'MEMBRANE_AI_MAX_BODY_BYTES', flag: '--ai-max-body-bytes', default: '1048576', help: 'AI filter: the most request-body bytes held and read per AI API call (larger: 413)', parse: wholeNumber(64 * 1024 * 1024) },
];

const byName = new Map(SETTINGS.map((s) => [s.name, s]));

export type ConfigFlags = Partial<Record<SettingName, string | number | boolean | undefined>>;

/** The configuration from an environment and flags (flags win); throws CONFIG_INVALID on a bad value. */
export function buildConfig(input: { env?: Readonly<Record<string, string | undefined>>; flags?: ConfigFlags; file?: ConfigFlags } = {}): MembraneConfig {
  const env = input.env ?? {};
  const flags = input.flags ?? {};
  const file = input.file ?? {};
  const str = (f: string | number | boolean): string => String(f === true ? '1' : f === false ? '0' : f);
  const raw = (s: Setting): string | undefined => {
    const f = flags[s.name];
    if (f !== undefined) return str(f);
    const e = env[s.env];
    if (s.name === 'noColor') return e !== undefined && e !== '' ? '1' : undefined;
    if (e !== undefined && e !== '') return e;
    // a config file (`membrane agent --config FILE`) is the lowest layer above the defaults
    const c = file[s.name];
    return c === undefined ? undefined : str(c);
  };
  const value = <K extends SettingName>(name: K, dflt: MembraneConfig[K]): MembraneConfig[K] => {
    const s = byName.get(name)!;
    const r = raw(s);
    return r === undefined ? dflt : (s.parse(r) as MembraneConfig[K]);
  };
  const lab = value('lab', 'mbr');
  const out: MembraneConfig = {
    lab,
    stateDir: value('stateDir', join('/run/membrane', lab)),
    bpffs: value('bpffs', '/sys/fs/bpf/membrane'),
    logLevel: value('logLevel', 'info'),
    node: value('node', 'node1'),
    hubbleMetrics: value('hubbleMetrics', DEFAULT_HUBBLE_METRICS),
    hubbleMetricsPort: value('hubbleMetricsPort', 9965),
    hubbleMetricsOpenMetrics: value('hubbleMetricsOpenMetrics', false),
    agentMetricsPort: value('agentMetricsPort', 9962),
    hubbleEventBufferCapacity: value('hubbleEventBufferCapacity', 4095),
    hubbleDisableTls: value('hubbleDisableTls', false),
    hubbleRelayPort: value('hubbleRelayPort', 4245),
    hubbleRelayDisableServerTls: value('hubbleRelayDisableServerTls', false),
    hubbleTlsCertFile: value('hubbleTlsCertFile', undefined),
    hubbleTlsKeyFile: value('hubbleTlsKeyFile', undefined),
    hubbleTlsClientCaFiles: value('hubbleTlsClientCaFiles', undefined),
    otlpEndpoint: value('otlpEndpoint', undefined),
    labDnsPodIp: value('labDnsPodIp', false),
    tofqdnsMinTTL: value('tofqdnsMinTTL', 0),
    tofqdnsMaxIPsPerHostname: value('tofqdnsMaxIPsPerHostname', 50),
    tofqdnsIdleConnectionGraceMs: value('tofqdnsIdleConnectionGraceMs', 0),
    tofqdnsGcMs: value('tofqdnsGcMs', 1000),
    tofqdnsDnsRejectResponseCode: value('tofqdnsDnsRejectResponseCode', 'refused'),
    dnsProxyHold: value('dnsProxyHold', true),
    externalEnvoyProxy: value('externalEnvoyProxy', undefined),
    bpfEventsDefaultRateLimit: value('bpfEventsDefaultRateLimit', 1000),
    bpfEventsDefaultBurstLimit: value('bpfEventsDefaultBurstLimit', 1000),
    policyAuditMode: value('policyAuditMode', false),
    hubbleServer: value('hubbleServer', undefined),
    hubbleTls: value('hubbleTls', false),
    hubbleTlsCaCertFiles: value('hubbleTlsCaCertFiles', undefined),
    hubbleTlsClientCertFile: value('hubbleTlsClientCertFile', undefined),
    hubbleTlsClientKeyFile: value('hubbleTlsClientKeyFile', undefined),
    hubbleTlsServerName: value('hubbleTlsServerName', undefined),
    noColor: value('noColor', false),
    kvstore: value('kvstore', undefined),
    kvstoreEndpoint: value('kvstoreEndpoint', undefined),
    kvstoreCa: value('kvstoreCa', undefined),
    kvstoreCert: value('kvstoreCert', undefined),
    kvstoreKey: value('kvstoreKey', undefined),
    kvstoreLeaseTTL: value('kvstoreLeaseTTL', undefined),
    agentCpuProfile: value('agentCpuProfile', undefined),
    identityGcInterval: value('identityGcInterval', undefined),
    routingMode: value('routingMode', 'tunnel'),
    enableIPv6: value('enableIPv6', false),
    monitorAggregation: value('monitorAggregation', 'medium'),
    monitorAggregationInterval: value('monitorAggregationInterval', 5),
    bpfRunTimeStats: value('bpfRunTimeStats', false),
    podCidr: value('podCidr', undefined),
    devices: value('devices', undefined),
    nodeAddresses: value('nodeAddresses', undefined),
    clusterDnsIp: value('clusterDnsIp', undefined),
    encryption: value('encryption', 'disabled'),
    encryptionNode: value('encryptionNode', false),
    encryptionStrict: value('encryptionStrict', false),
    encryptionStrictIngress: value('encryptionStrictIngress', false),
    encryptionStrictModeCidr: value('encryptionStrictModeCidr', '10.244.0.0/16'),
    otel: Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[0].startsWith('OTEL_') && e[1] !== undefined && e[1] !== '')),
    aiMaxBodyBytes: value('aiMaxBodyBytes', 1 << 20),
  };
  // strict and node encryption only mean something with an encryption to enforce
  for (const name of ['encryptionStrict', 'encryptionStrictIngress', 'encryptionNode'] as const) {
    if (out[name] && out.encryption === 'disabled') {
      const s = byName.get(name)!;
      throw new MembraneError('CONFIG_INVALID', `${name} (${s.flag} / ${s.env}) needs transparent encryption, but encryption is disabled`, { hint: 'add --encryption wireguard' });
    }
  }
  // VXLAN inside WireGuard is built and tested for pod traffic; node-to-node encryption on top of
  // it (all traffic to other nodes' addresses through cilium_wg0) has no test yet: refused
  if (out.encryptionNode && out.routingMode === 'tunnel') {
    throw new MembraneError('CONFIG_UNSUPPORTED', 'encryptionNode (--encryption-node / MEMBRANE_ENCRYPTION_NODE) with routing mode tunnel is not implemented (pod traffic is encrypted as VXLAN inside WireGuard)', { hint: 'drop --encryption-node, or add --routing-mode native' });
  }
  // native routing sends each node's pod CIDR through cilium_wg0, the IPv4 one only: pods' IPv6
  // between nodes would leave unencrypted. Tunnel routing encrypts them inside the VXLAN.
  if (out.enableIPv6 && out.encryption === 'wireguard' && out.routingMode === 'native') {
    throw new MembraneError('CONFIG_UNSUPPORTED', 'enableIPv6 (--enable-ipv6 / MEMBRANE_ENABLE_IPV6) with WireGuard encryption in routing mode native is not implemented (pods\' IPv6 between nodes would not be encrypted)', { hint: 'use --routing-mode tunnel (IPv6 is encrypted inside the VXLAN), or drop --enable-ipv6' });
  }
  return out;
}

/**
 * The settings of a config file (`membrane agent --config FILE`, YAML or JSON): a mapping whose
 * keys are setting names (`podCidr`) or flags without dashes (`pod-cidr`), values scalars. An
 * unknown key, a CLI-only setting or a value that is not a scalar is a CONFIG_INVALID error
 * naming the file and the key; values are judged by each setting's parser in buildConfig.
 */
export function settingsFromDocument(doc: unknown, file: string): ConfigFlags {
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new MembraneError('CONFIG_INVALID', `${file}: the config file is not a mapping of settings`, { hint: 'write one `setting: value` per line, e.g. `pod-cidr: 10.244.7.0/24`' });
  const byFlag = new Map(SETTINGS.map((s) => [s.flag.slice(2), s]));
  const out: ConfigFlags = {};
  for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
    const s = byName.get(k as SettingName) ?? byFlag.get(k);
    if (!s || s.scope === 'cli') throw new MembraneError('CONFIG_INVALID', `${file}: unknown setting "${k}"`, { hint: '`membrane agent --help` lists the settings (names as flags without dashes)' });
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') throw new MembraneError('CONFIG_INVALID', `${file}: ${k}: the value is not a string, number or boolean`, { hint: 'lists are comma-separated strings, e.g. `devices: eth0,eth1`' });
    out[s.name] = v;
  }
  return out;
}

/** A configuration with some settings replaced by flags (a command's own options). */
export function withFlags(config: MembraneConfig, flags: ConfigFlags): MembraneConfig {
  return buildConfig({ env: configEnv(config), flags });
}

/** The process's configuration: its environment and the given flags. */
export function loadConfig(flags: ConfigFlags = {}, file: ConfigFlags = {}): MembraneConfig {
  return buildConfig({ env: process.env, flags, file });
}

/**
 * The environment of a process membrane starts: this process's whole environment (`inherit`: the
 * agents) or only PATH and HOME (workloads, world hosts); then every setting of `config` in its
 * variable, so the child builds the same configuration; then `extra`.
 */
export function childEnv(o: { inherit: boolean; config?: MembraneConfig; extra?: Record<string, string> }): Record<string, string> {
  const out: Record<string, string> = {};
  if (o.inherit) {
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) out[k] = v;
  } else {
    out.PATH = process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
    out.HOME = '/root';
  }
  if (o.config) Object.assign(out, configEnv(o.config));
  return { ...out, ...o.extra };
}

/** Every setting of a configuration as its environment variable (what `childEnv` adds). */
export function configEnv(config: MembraneConfig): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of SETTINGS) {
    const v = config[s.name];
    if (v === undefined || (s.name === 'noColor' && v === false)) continue;
    out[s.env] = typeof v === 'boolean' ? (v ? '1' : '0') : String(v);
  }
  Object.assign(out, config.otel);
  return out;
}

/** The settings table as `membrane up --help` prints it (the README has the same table). */
/** A true/false setting: `membrane up` also takes it as a bare flag (`--encryption-strict`). */
export function isFlagSetting(s: Setting): boolean {
  return s.parse === flag;
}

export function settingsHelp(): string {
  const rows = SETTINGS.map((s) => `  ${s.env.padEnd(42)} ${s.scope === 'cli' ? '(CLI)' : s.flag}\n      ${s.help}\n      default: ${s.default}`);
  return `Settings (environment variable, flag of \`membrane up\`; a flag wins over the environment, which wins over the default;\n(CLI): read by every command, set in the environment):\n${rows.join('\n')}\n`;
}

