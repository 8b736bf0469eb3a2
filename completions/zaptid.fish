# fish completion for zaptid. Installed as /usr/share/fish/vendor_completions.d/zaptid.fish.
# Keep in step with `zaptid [SUBCOMMAND] --help` (tests/cli/test_completions.py checks it).

set -l subcommands gen get decode compose serve bench version

# Nothing but the subcommands (and files never) before a subcommand is given.
complete -c zaptid -f
complete -c zaptid -n "not __fish_seen_subcommand_from $subcommands" -a gen -d 'Generate IDs locally, without a server'
complete -c zaptid -n "not __fish_seen_subcommand_from $subcommands" -a get -d 'Get IDs from a zaptid or zaptidgen server'
complete -c zaptid -n "not __fish_seen_subcommand_from $subcommands" -a decode -d 'Split IDs into time, sequence and machine id'
complete -c zaptid -n "not __fish_seen_subcommand_from $subcommands" -a compose -d 'Build the ID of given parts'
complete -c zaptid -n "not __fish_seen_subcommand_from $subcommands" -a serve -d 'Run the gRPC server'
complete -c zaptid -n "not __fish_seen_subcommand_from $subcommands" -a bench -d 'Load-test a server'
complete -c zaptid -n "not __fish_seen_subcommand_from $subcommands" -a version -d 'Print the version'
complete -c zaptid -n "not __fish_seen_subcommand_from $subcommands" -l version -d 'Print the version and exit'

# Everywhere.
complete -c zaptid -s h -l help -d 'Print help and exit'
complete -c zaptid -l log-level -x -a 'trace debug info warn error critical off' -d 'Log level'
complete -c zaptid -l log-format -x -a 'text json' -d 'Log format'

# Layout: every subcommand that makes or reads IDs locally.
set -l layout_cmds gen decode compose serve
complete -c zaptid -n "__fish_seen_subcommand_from $layout_cmds" -l layout -x -a 'sonyflake sonyflake-v2 snowflake' -d 'ID layout preset'
complete -c zaptid -n "__fish_seen_subcommand_from $layout_cmds" -l epoch -x -d 'Override the epoch (RFC 3339 or Unix ms)'
complete -c zaptid -n "__fish_seen_subcommand_from $layout_cmds" -l time-unit -x -d 'Override the time unit (e.g. 10ms)'
complete -c zaptid -n "__fish_seen_subcommand_from $layout_cmds" -l bits-sequence -x -d 'Override the sequence bits (1-31)'
complete -c zaptid -n "__fish_seen_subcommand_from $layout_cmds" -l bits-machine -x -d 'Override the machine id bits (0-31)'

# Identity: the subcommands that issue IDs on this host.
complete -c zaptid -n '__fish_seen_subcommand_from gen compose serve' -l machine-id -x -d 'Machine id'
complete -c zaptid -n '__fish_seen_subcommand_from gen serve' -l state-dir -x -a '(__fish_complete_directories)' -d 'Folder for the host lock and state files'
complete -c zaptid -n '__fish_seen_subcommand_from gen serve' -l max-clock-wait -x -d 'How long to wait for a clock that stepped back'
complete -c zaptid -n '__fish_seen_subcommand_from gen serve' -l lock-timeout -x -d 'How long to wait for the host lock'

# Output formats.
complete -c zaptid -n '__fish_seen_subcommand_from gen compose get' -l format -x -a 'dec hex json' -d 'Output format'
complete -c zaptid -n '__fish_seen_subcommand_from decode' -l format -x -a 'text json tsv' -d 'Output format'
complete -c zaptid -n '__fish_seen_subcommand_from bench' -l format -x -a 'text json' -d 'Report format'
complete -c zaptid -n '__fish_seen_subcommand_from gen get' -s n -l count -x -d 'How many IDs'

# compose
complete -c zaptid -n '__fish_seen_subcommand_from compose' -l time -x -a now -d 'Time: RFC 3339, Unix ms or now'
complete -c zaptid -n '__fish_seen_subcommand_from compose' -l tick -x -d 'The raw time field'
complete -c zaptid -n '__fish_seen_subcommand_from compose' -l sequence -x -d 'Sequence'
complete -c zaptid -n '__fish_seen_subcommand_from compose' -l max -d 'Give unset parts their largest value'

# serve
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l listen -x -d 'Address: host:port, [::]:port or unix:/path'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l lanes -x -d 'Machine ids this server holds'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l max-batch -x -d 'Largest batch one call may ask for'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l threads -x -d 'Threads that serve requests'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l max-streams -x -d 'Calls one connection may have open at once'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l metrics-listen -x -d 'HTTP address for /metrics, /healthz, /readyz'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l shutdown-timeout -x -d 'Time to finish calls in flight'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l handshake-timeout -x -d 'Close connections that do not complete the handshake in time'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l idle-timeout -x -d 'Close connections with no call for this long (0 never)'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l max-memory -x -d 'Memory budget of connections and calls'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l max-stream-resets -x -d 'Close a connection resetting more calls per second (0 no limit)'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l max-control-frames -x -d 'Close a connection sending more frames without a request per second (0 no limit)'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l tls-key -r -F -d 'Private key file'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l tls-client-ca -r -F -d 'CA for client certificates'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l machine-id-from -x -a 'local etcd' -d 'Where the machine id comes from'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l etcd-endpoints -x -d 'etcd endpoints, host:port,...'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l etcd-prefix -x -d 'etcd key prefix'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l lease-ttl -x -d 'etcd lease time to live'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l machine-id-range -x -d 'Machine ids to lease, A-B'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l etcd-ca -r -F -d 'CA certificate for etcd'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l etcd-cert -r -F -d 'Client certificate for etcd'
complete -c zaptid -n '__fish_seen_subcommand_from serve' -l etcd-key -r -F -d 'Client private key for etcd'

# get and bench: the client side.
complete -c zaptid -n '__fish_seen_subcommand_from serve get bench' -l tls-cert -r -F -d 'Certificate file'
complete -c zaptid -n '__fish_seen_subcommand_from get' -s s -l server -x -a '(__fish_print_hostnames)' -d 'gRPC target (default localhost:8888)'
complete -c zaptid -n '__fish_seen_subcommand_from bench' -l server -x -a '(__fish_print_hostnames)' -d 'gRPC target (default localhost:8888)'
complete -c zaptid -n '__fish_seen_subcommand_from get bench' -l tls -d 'Use TLS with the system roots'
complete -c zaptid -n '__fish_seen_subcommand_from get bench' -l tls-ca -r -F -d 'CA certificate to verify the server'
complete -c zaptid -n '__fish_seen_subcommand_from get bench' -l tls-key -r -F -d 'Client private key for mutual TLS'
complete -c zaptid -n '__fish_seen_subcommand_from get bench' -l tls-server-name -x -d 'Name to expect in the server certificate'
complete -c zaptid -n '__fish_seen_subcommand_from get bench' -l timeout -x -d 'Deadline of each call'
complete -c zaptid -n '__fish_seen_subcommand_from get' -l decode -d 'Print the decoded parts'
complete -c zaptid -n '__fish_seen_subcommand_from get' -l info -d "Print the server's Info instead of IDs"
complete -c zaptid -n '__fish_seen_subcommand_from bench' -s c -l connections -x -d 'Connections to open'
complete -c zaptid -n '__fish_seen_subcommand_from bench' -s m -l concurrency -x -d 'Calls in flight per connection'
complete -c zaptid -n '__fish_seen_subcommand_from bench' -s d -l duration -x -d 'How long to run'
complete -c zaptid -n '__fish_seen_subcommand_from bench' -l method -x -a 'gen batch' -d 'Method to call'
complete -c zaptid -n '__fish_seen_subcommand_from bench' -l batch-size -x -d 'IDs per batch call'
