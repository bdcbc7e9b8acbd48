module github.com/kubesplit/kubesplit/services/tunnel-gateway

go 1.26.0

require github.com/kubesplit/kubesplit v0.0.0

require github.com/spf13/pflag v1.0.10 // indirect

replace github.com/kubesplit/kubesplit => ../..
