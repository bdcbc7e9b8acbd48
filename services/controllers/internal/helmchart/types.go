// Package helmchart is the HelmChart controller: k3s's helm.cattle.io/v1
// HelmChart and HelmChartConfig resources, installed, upgraded and
// uninstalled with Helm's Go SDK in this process (k3s runs each through a
// Job whose image carries the helm binary and a shell script; here there is
// no job image to build, pull or keep up to date, and Helm's errors reach
// the resource's status and events directly).
package helmchart

import (
	"encoding/json"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The API group k3s defined; kept so that a k3s user's manifests work
// unchanged.
const (
	Group   = "helm.cattle.io"
	Version = "v1"
	// Name is the part's name for --disable.
	Name = "helm-controller"
	// Finalizer holds a HelmChart until its release is uninstalled.
	Finalizer = "helm.cattle.io/kubesplit-helm-controller"
)

var (
	ChartGVR  = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "helmcharts"}
	ConfigGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "helmchartconfigs"}
)

// HelmChart is the part of k3s's HelmChart that this controller reads.
type HelmChart struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              HelmChartSpec   `json:"spec,omitempty"`
	Status            HelmChartStatus `json:"status,omitempty"`
}

// HelmChartSpec: k3s's fields. Those about its job (jobImage,
// podSecurityContext, backOffLimit, bootstrap, helmVersion...) are accepted
// and have nothing to act on here.
type HelmChartSpec struct {
	TargetNamespace string                        `json:"targetNamespace,omitempty"`
	CreateNamespace bool                          `json:"createNamespace,omitempty"`
	Chart           string                        `json:"chart,omitempty"`
	Version         string                        `json:"version,omitempty"`
	Repo            string                        `json:"repo,omitempty"`
	Set             map[string]intstr.IntOrString `json:"set,omitempty"`
	ValuesContent   string                        `json:"valuesContent,omitempty"`
	// ChartContent is a base64 chart archive (.tgz): the air-gapped way.
	ChartContent string           `json:"chartContent,omitempty"`
	Timeout      *metav1.Duration `json:"timeout,omitempty"`
	// FailurePolicy is "reinstall" (default: a failed release is uninstalled
	// and installed again) or "abort" (left as it is for a person to look at).
	FailurePolicy string `json:"failurePolicy,omitempty"`
}

// HelmChartStatus is what the controller reports.
type HelmChartStatus struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the conditions describe.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Revision is the Helm release's revision.
	Revision int `json:"revision,omitempty"`
	// AppliedHash identifies the chart, values and options last applied.
	AppliedHash string `json:"appliedHash,omitempty"`
}

// HelmChartConfig overrides a HelmChart's values (same name and namespace).
type HelmChartConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		ValuesContent string `json:"valuesContent,omitempty"`
	} `json:"spec,omitempty"`
}

// ConditionReady says whether the release is deployed as the spec asks.
const ConditionReady = "Ready"

// CRDs are the two resources' definitions. The schemas name the fields
// this controller reads and keep every other one (k3s's job settings), so
// k3s manifests apply unchanged.
func CRDs() []*apiextensionsv1.CustomResourceDefinition {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	chartSpec := apiextensionsv1.JSONSchemaProps{
		Type: "object", XPreserveUnknownFields: ptr.To(true),
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"targetNamespace": str, "chart": str, "version": str, "repo": str,
			"valuesContent": str, "chartContent": str, "timeout": str,
			"createNamespace": {Type: "boolean"},
			"failurePolicy":   {Type: "string", Enum: []apiextensionsv1.JSON{{Raw: []byte(`"abort"`)}, {Raw: []byte(`"reinstall"`)}}},
			"set": {Type: "object", AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{
				Schema: &apiextensionsv1.JSONSchemaProps{XIntOrString: true, AnyOf: []apiextensionsv1.JSONSchemaProps{{Type: "integer"}, {Type: "string"}}}}},
		},
	}
	configSpec := apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptr.To(true),
		Properties: map[string]apiextensionsv1.JSONSchemaProps{"valuesContent": str}}
	status := apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptr.To(true)}
	crd := func(kind, plural string, spec apiextensionsv1.JSONSchemaProps, withStatus bool, columns []apiextensionsv1.CustomResourceColumnDefinition) *apiextensionsv1.CustomResourceDefinition {
		props := map[string]apiextensionsv1.JSONSchemaProps{"spec": spec}
		v := apiextensionsv1.CustomResourceDefinitionVersion{Name: Version, Served: true, Storage: true,
			AdditionalPrinterColumns: columns}
		if withStatus {
			props["status"] = status
			v.Subresources = &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}}
		}
		v.Schema = &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object", Properties: props}}
		return &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: plural + "." + Group, Labels: map[string]string{"app.kubernetes.io/managed-by": "kubesplit"}},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: Group, Scope: apiextensionsv1.NamespaceScoped,
				Names:    apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, ListKind: kind + "List", Plural: plural, Singular: lower(kind)},
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{v},
			},
		}
	}
	return []*apiextensionsv1.CustomResourceDefinition{
		crd("HelmChart", "helmcharts", chartSpec, true, []apiextensionsv1.CustomResourceColumnDefinition{
			{Name: "Chart", Type: "string", JSONPath: ".spec.chart"},
			{Name: "Target", Type: "string", JSONPath: ".spec.targetNamespace"},
			{Name: "Revision", Type: "integer", JSONPath: ".status.revision"},
			{Name: "Ready", Type: "string", JSONPath: `.status.conditions[?(@.type=="Ready")].status`},
			{Name: "Age", Type: "date", JSONPath: ".metadata.creationTimestamp"},
		}),
		crd("HelmChartConfig", "helmchartconfigs", configSpec, false, nil),
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// mustJSON is for hashing values that came from JSON.
func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
