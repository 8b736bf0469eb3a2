# bash completion for zaptid                                  -*- shell-script -*-
# Installed as /usr/share/bash-completion/completions/zaptid; bash-completion loads it on demand.
# Keep in step with `zaptid [SUBCOMMAND] --help` (tests/cli/test_completions.py checks it).

_zaptid()
{
    local cur prev words cword split=false
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion -s || return
    else
        # Without bash-completion: no --opt=value splitting, but everything else works.
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local subcommands="gen get decode compose serve bench version"
    local log_opts="--log-level --log-format"
    local layout_opts="--layout --epoch --time-unit --bits-sequence --bits-machine"
    local identity_opts="--machine-id --state-dir --max-clock-wait --lock-timeout"
    local tls_client_opts="--tls --tls-ca --tls-cert --tls-key --tls-server-name"
    local etcd_opts="--machine-id-from --etcd-endpoints --etcd-prefix --lease-ttl --machine-id-range
        --etcd-ca --etcd-cert --etcd-key"
    # Options that take no value; every other option does.
    local flags="-h --help --version --max --decode --tls"

    # The subcommand is the first word that is neither an option nor an option's value.
    local i sub=
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --log-level | --log-format) ((i++)) ;;
            -*) ;;
            *)
                sub=${words[i]}
                break
                ;;
        esac
    done

    local opts
    case $sub in
        '') opts="--help --version $log_opts" ;;
        gen) opts="--help -n --count --format $layout_opts $identity_opts $log_opts" ;;
        decode) opts="--help --format $layout_opts $log_opts" ;;
        compose) opts="--help --time --tick --sequence --machine-id --max --format $layout_opts $log_opts" ;;
        serve)
            opts="--help --listen --lanes --max-batch --threads --max-streams --metrics-listen --shutdown-timeout --handshake-timeout --idle-timeout --max-memory --max-stream-resets --max-control-frames --tls-cert --tls-key --tls-client-ca
                $identity_opts $layout_opts $etcd_opts $log_opts"
            ;;
        get) opts="--help -s --server -n --count --timeout --format --decode --info $tls_client_opts $log_opts" ;;
        bench)
            opts="--help -s --server -c --connections -m --concurrency -d --duration --method --batch-size
                --timeout --format $tls_client_opts $log_opts"
            ;;
        version) opts="--help $log_opts" ;;
        *) return ;;
    esac

    case $prev in
        --layout)
            COMPREPLY=($(compgen -W "sonyflake sonyflake-v2 snowflake" -- "$cur"))
            return
            ;;
        --format)
            case $sub in
                decode) COMPREPLY=($(compgen -W "text json tsv" -- "$cur")) ;;
                bench) COMPREPLY=($(compgen -W "text json" -- "$cur")) ;;
                *) COMPREPLY=($(compgen -W "dec hex json" -- "$cur")) ;;
            esac
            return
            ;;
        --log-level)
            COMPREPLY=($(compgen -W "trace debug info warn error critical off" -- "$cur"))
            return
            ;;
        --log-format)
            COMPREPLY=($(compgen -W "text json" -- "$cur"))
            return
            ;;
        --method)
            COMPREPLY=($(compgen -W "gen batch" -- "$cur"))
            return
            ;;
        --machine-id-from)
            COMPREPLY=($(compgen -W "local etcd" -- "$cur"))
            return
            ;;
        --time)
            COMPREPLY=($(compgen -W "now" -- "$cur"))
            return
            ;;
        --tls-ca | --tls-cert | --tls-key | --tls-client-ca | --etcd-ca | --etcd-cert | --etcd-key)
            if declare -F _filedir >/dev/null 2>&1; then
                _filedir
            else
                COMPREPLY=($(compgen -f -- "$cur"))
            fi
            return
            ;;
        --state-dir)
            if declare -F _filedir >/dev/null 2>&1; then
                _filedir -d
            else
                COMPREPLY=($(compgen -d -- "$cur"))
            fi
            return
            ;;
        -*)
            # Any other option that takes a value: a number, duration or address; nothing to offer.
            [[ " $flags " == *" $prev "* ]] && ! $split || return
            ;;
    esac

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ -z $sub ]]; then
        COMPREPLY=($(compgen -W "$subcommands" -- "$cur"))
    fi
} &&
    complete -F _zaptid zaptid

# ex: filetype=sh
