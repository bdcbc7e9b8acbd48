package example

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/e2e-framework/klient/k8s/resources"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/klient/wait/conditions"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

// testappDeployment runs testapp's HTTP server (`testapp serve --port
// 8080`) with a readiness probe, so Available means it serves.
func testappDeployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "testapp",
					Image: testappImage,
					// loaded by LoadImageToCluster: never pulled
					ImagePullPolicy: corev1.PullNever,
					Args:            []string{"serve", "--port", "8080"},
					Ports:           []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 1,
					},
				}}},
			},
		},
	}
}

func TestTestappDeployment(t *testing.T) {
	dep := testappDeployment("testapp", 2)
	f := features.New("a Deployment of a loaded image").
		WithLabel("provider", "kubesplit").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if err := cfg.Client().Resources().Create(ctx, dep); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("becomes Available", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			err := wait.For(conditions.New(cfg.Client().Resources()).DeploymentConditionMatch(dep, appsv1.DeploymentAvailable, corev1.ConditionTrue),
				wait.WithTimeout(3*time.Minute), wait.WithInterval(time.Second))
			if err != nil {
				t.Fatalf("deployment %s/%s not Available: %v", dep.Namespace, dep.Name, err)
			}
			return ctx
		}).
		Assess("runs every replica", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			var pods corev1.PodList
			err := cfg.Client().Resources(namespace).List(ctx, &pods, resources.WithLabelSelector("app="+dep.Name))
			if err != nil {
				t.Fatal(err)
			}
			ready := 0
			for _, p := range pods.Items {
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
						ready++
						t.Logf("pod %s ready on %s (%s)", p.Name, p.Spec.NodeName, p.Status.PodIP)
					}
				}
			}
			if ready != int(*dep.Spec.Replicas) {
				t.Fatalf("%d of %d pods ready", ready, *dep.Spec.Replicas)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if err := cfg.Client().Resources().Delete(ctx, dep); err != nil {
				t.Error(err)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
