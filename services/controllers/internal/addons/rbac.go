// Package addons is the part of the controllers service that is kubesplit's
// own: the cluster's bootstrap RBAC (what lets nodes join and the apiserver
// reach kubelets) and the approver for kubelet serving certificates.
package addons

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/nodeidentity"
	"github.com/kubesplit/kubesplit/pkg/tokenstore"
)

// Label marks the objects this package owns.
const Label = "kubesplit.io/bootstrap-rbac"

// SelfNodeServerSubresource is what a node must be allowed to create for its
// kubelet serving CSR to be approved (checked by SubjectAccessReview).
const SelfNodeServerSubresource = "selfnodeserver"

func binding(name, role string, subjects ...rbacv1.Subject) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{Label: "true"}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   subjects,
	}
}

func group(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
}

func user(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
}

// ClusterRoles are kubesplit's own roles.
func ClusterRoles() []*rbacv1.ClusterRole {
	readNodes := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}
	return []*rbacv1.ClusterRole{{
		ObjectMeta: metav1.ObjectMeta{Name: "kubesplit:node-agent", Labels: map[string]string{Label: "true"}},
		Rules: []rbacv1.PolicyRule{
			// the pod overlay follows every node's pod range and VTEP
			readNodes,
			// NetworkPolicy enforcement (node/internal/netpol): every pod is a
			// possible peer of a node's rules, so it reads all of them (as
			// kube-router does in k3s), with the namespaces' labels
			{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"list", "watch"}},
			// a node's own kubelet serving CSR (the approver checks this with a SubjectAccessReview)
			{APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"certificatesigningrequests/" + SelfNodeServerSubresource}, Verbs: []string{"create"}},
		},
	}, {
		// the gateway routes the apiserver's traffic by the nodes' addresses and pod ranges
		ObjectMeta: metav1.ObjectMeta{Name: "kubesplit:tunnel-gateway", Labels: map[string]string{Label: "true"}},
		Rules:      []rbacv1.PolicyRule{readNodes},
	}}
}

// ClusterRoleBindings are the bindings nodes and the apiserver need.
func ClusterRoleBindings() []*rbacv1.ClusterRoleBinding {
	return []*rbacv1.ClusterRoleBinding{
		// the apiserver's kubelet client: logs, exec, attach, port-forward, metrics
		binding("kubesplit:kubelet-api-admin", "system:kubelet-api-admin", user(bootstrap.APIServerKubeletClientCN)),
		// join tokens: create a CSR, have the client CSR approved
		binding("kubesplit:node-bootstrapper", "system:node-bootstrapper", group(tokenstore.NodeGroup)),
		binding("kubesplit:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", group(tokenstore.NodeGroup)),
		// joined nodes renew their own client certificates
		binding("kubesplit:node-autoapprove-renewal", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", group(nodeidentity.Group)),
		// kube-proxy runs in the node agent with the node's identity
		binding("kubesplit:node-proxier", "system:node-proxier", group(nodeidentity.Group)),
		binding("kubesplit:node-agent", "kubesplit:node-agent", group(nodeidentity.Group)),
		binding("kubesplit:tunnel-gateway", "kubesplit:tunnel-gateway", user(bootstrap.TunnelGatewayCN)),
	}
}

// ApplyRBAC creates or updates kubesplit's bootstrap RBAC.
func ApplyRBAC(ctx context.Context, c kubernetes.Interface) error {
	for _, r := range ClusterRoles() {
		cur, err := c.RbacV1().ClusterRoles().Get(ctx, r.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = c.RbacV1().ClusterRoles().Create(ctx, r, metav1.CreateOptions{})
		case err == nil:
			cur.Rules, cur.Labels = r.Rules, r.Labels
			_, err = c.RbacV1().ClusterRoles().Update(ctx, cur, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("cluster role %s: %w", r.Name, err)
		}
	}
	for _, b := range ClusterRoleBindings() {
		cur, err := c.RbacV1().ClusterRoleBindings().Get(ctx, b.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{})
		case err == nil && cur.RoleRef != b.RoleRef:
			// roleRef is immutable: replace the binding
			if err = c.RbacV1().ClusterRoleBindings().Delete(ctx, b.Name, metav1.DeleteOptions{}); err == nil {
				_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{})
			}
		case err == nil:
			cur.Subjects, cur.Labels = b.Subjects, b.Labels
			_, err = c.RbacV1().ClusterRoleBindings().Update(ctx, cur, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("cluster role binding %s: %w", b.Name, err)
		}
	}
	return nil
}
