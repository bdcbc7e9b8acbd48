module github.com/kubesplit/kubesplit/node

go 1.26.0
