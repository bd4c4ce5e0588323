// Command deploy-validate checks custom resources (Istio, Envoy Gateway,
// Gateway API, cert-manager) the way a Kubernetes API server checks them on
// create with strict field validation: the CRD's structural OpenAPI schema
// (types, enums, patterns, required fields, defaults), unknown fields
// (the pruning a server would do, reported as errors), list-type invariants,
// object metadata, and the CRD's CEL rules (x-kubernetes-validations). The
// CRDs come from the pinned upstream Go modules (see tests/tools.txt).
//
// Istio's meshConfig has no CRD: it is decoded strictly (unknown fields are
// errors) into istio.io/api's MeshConfig proto, as istiod reads it. Istio
// specs are also decoded strictly into their proto as a second check.
//
// Usage:
//
//	deploy-validate -crd FILE [-crd FILE ...] [-helm-values FILE ...] MANIFEST ...
//
// Every document of every MANIFEST must be a kind some -crd defines (or an
// IstioOperator); anything else is an error, so nothing passes unchecked.
// Prints one line per document; exits 1 if any document is invalid.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metavalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

// version is one served version of one CRD.
type version struct {
	namespaced bool
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

func main() {
	var crdFiles, helmValues files
	flag.Var(&crdFiles, "crd", "CustomResourceDefinition YAML (multi-document); repeatable")
	flag.Var(&helmValues, "helm-values", "Istio Helm values file whose meshConfig is checked; repeatable")
	flag.Parse()

	kinds := map[schema.GroupVersionKind]*version{}
	for _, path := range crdFiles {
		if err := loadCRDs(path, kinds); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(2)
		}
	}

	failed := false
	report := func(path, what string, errs []string) {
		if len(errs) == 0 {
			fmt.Printf("ok      %s: %s\n", path, what)
			return
		}
		failed = true
		for _, e := range errs {
			fmt.Printf("INVALID %s: %s: %s\n", path, what, e)
		}
	}

	for _, path := range helmValues {
		errs := checkHelmValues(path)
		report(path, "Helm values", errs)
	}
	for _, path := range flag.Args() {
		docs, err := readDocs(path)
		if err != nil {
			report(path, "file", []string{err.Error()})
			continue
		}
		if len(docs) == 0 {
			report(path, "file", []string{"no documents"})
		}
		for _, doc := range docs {
			what, errs := checkResource(doc, kinds)
			report(path, what, errs)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// readDocs splits a multi-document YAML file into JSON objects.
func readDocs(path string) ([]map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs []map[string]interface{}
	for {
		chunk, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		// sigs.k8s.io/yaml.YAMLToJSONStrict rejects duplicate keys, as kubectl does.
		jsonDoc, err := yaml.YAMLToJSONStrict(chunk)
		if err != nil {
			return nil, err
		}
		if bytes.Equal(bytes.TrimSpace(jsonDoc), []byte("null")) {
			continue // an empty document (comments only)
		}
		var obj map[string]interface{}
		decoder := json.NewDecoder(bytes.NewReader(jsonDoc))
		decoder.UseNumber()
		if err := decoder.Decode(&obj); err != nil {
			return nil, err
		}
		docs = append(docs, toUnstructured(obj).(map[string]interface{}))
	}
}

// toUnstructured turns json.Number into int64 or float64, as the API server's decoder does.
func toUnstructured(v interface{}) interface{} {
	switch v := v.(type) {
	case map[string]interface{}:
		for k, x := range v {
			v[k] = toUnstructured(x)
		}
		return v
	case []interface{}:
		for i, x := range v {
			v[i] = toUnstructured(x)
		}
		return v
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	default:
		return v
	}
}

func loadCRDs(path string, kinds map[schema.GroupVersionKind]*version) error {
	docs, err := readDocs(path)
	if err != nil {
		return err
	}
	for _, doc := range docs {
		if doc["kind"] != "CustomResourceDefinition" {
			continue
		}
		raw, _ := json.Marshal(doc)
		var crd apiextensionsv1.CustomResourceDefinition
		if err := json.Unmarshal(raw, &crd); err != nil {
			return fmt.Errorf("CRD %v: %w", doc["metadata"], err)
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served || v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				continue
			}
			var internal apiextensions.JSONSchemaProps
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
				return fmt.Errorf("CRD %s %s: %w", crd.Name, v.Name, err)
			}
			structural, err := structuralschema.NewStructural(&internal)
			if err != nil {
				return fmt.Errorf("CRD %s %s: not structural: %w", crd.Name, v.Name, err)
			}
			validator, _, err := apiservervalidation.NewSchemaValidator(&internal)
			if err != nil {
				return fmt.Errorf("CRD %s %s: %w", crd.Name, v.Name, err)
			}
			gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
			kinds[gvk] = &version{
				namespaced: crd.Spec.Scope == apiextensionsv1.NamespaceScoped,
				structural: structural,
				validator:  validator,
				cel:        cel.NewValidator(structural, true, celconfig.PerCallLimit),
			}
		}
	}
	return nil
}

func checkResource(obj map[string]interface{}, kinds map[schema.GroupVersionKind]*version) (string, []string) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	name := "?"
	if meta, ok := obj["metadata"].(map[string]interface{}); ok {
		if n, ok := meta["name"].(string); ok {
			name = n
		}
	}
	what := fmt.Sprintf("%s %s/%s", apiVersion, kind, name)
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return what, []string{err.Error()}
	}
	if gv.Group == "install.istio.io" && kind == "IstioOperator" {
		return what, checkIstioOperator(obj)
	}
	crd, ok := kinds[gv.WithKind(kind)]
	if !ok {
		return what, []string{"no CRD given for this apiVersion and kind (a typo, or a kind this validator is not meant for)"}
	}
	var errs []string
	if gv.Group == "security.istio.io" && kind == "AuthorizationPolicy" {
		// Before checkCustomResource, which prunes unknown fields.
		errs = strictProto("spec", obj["spec"], &securityv1beta1.AuthorizationPolicy{})
	}
	return what, append(errs, checkCustomResource(obj, crd)...)
}

// checkCustomResource follows the API server's create path for a custom
// resource: metadata, pruning (unknown fields are errors under strict field
// validation), defaulting, schema validation, list types, then CEL rules.
func checkCustomResource(obj map[string]interface{}, crd *version) []string {
	var errs []string
	meta, _, unknownMeta, err := schemaobjectmeta.GetObjectMetaWithOptions(obj, schemaobjectmeta.ObjectMetaOptions{ReturnUnknownFieldPaths: true})
	if err != nil {
		return []string{"metadata: " + err.Error()}
	}
	for _, path := range unknownMeta {
		errs = append(errs, "unknown field "+quote(path))
	}
	if meta == nil {
		return append(errs, "metadata: required")
	}
	if crd.namespaced && meta.Namespace == "" {
		meta.Namespace = "default" // kubectl applies it to the current namespace
	}
	for _, e := range metavalidation.ValidateObjectMeta(meta, crd.namespaced, metavalidation.NameIsDNSSubdomain, field.NewPath("metadata")) {
		errs = append(errs, e.Error())
	}

	unknown := structuralpruning.PruneWithOptions(obj, crd.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	sort.Strings(unknown)
	for _, path := range unknown {
		errs = append(errs, "unknown field "+quote(path))
	}
	if fieldErr, paths := schemaobjectmeta.CoerceWithOptions(nil, obj, crd.structural, false, schemaobjectmeta.CoerceOptions{ReturnUnknownFieldPaths: true}); fieldErr != nil {
		errs = append(errs, fieldErr.Error())
	} else {
		for _, path := range paths {
			errs = append(errs, "unknown field "+quote(path))
		}
	}
	structuraldefaulting.Default(obj, crd.structural)

	var fieldErrs field.ErrorList
	fieldErrs = append(fieldErrs, apiservervalidation.ValidateCustomResource(nil, obj, crd.validator)...)
	fieldErrs = append(fieldErrs, schemaobjectmeta.Validate(context.Background(), nil, obj, crd.structural, false)...)
	fieldErrs = append(fieldErrs, structurallisttype.ValidateListSetsAndMaps(nil, crd.structural, obj)...)
	if len(fieldErrs) == 0 {
		celErrs, _ := crd.cel.Validate(context.Background(), nil, crd.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		fieldErrs = append(fieldErrs, celErrs...)
	}
	for _, e := range fieldErrs {
		errs = append(errs, e.Error())
	}
	return errs
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

// strictProto decodes value into message with protojson, which rejects
// unknown fields.
func strictProto(path string, value interface{}, message proto.Message) []string {
	if value == nil {
		return nil
	}
	raw, err := json.Marshal(value)
	if err != nil {
		return []string{path + ": " + err.Error()}
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(raw, message); err != nil {
		return []string{fmt.Sprintf("%s (as %s): %v", path, message.ProtoReflect().Descriptor().FullName(), err)}
	}
	return nil
}

// istioOperatorSpec lists the fields of istio.io/istio's operator/pkg/apis
// IstioOperatorSpec (the type istioctl decodes); that module is too large to
// depend on for one struct.
var istioOperatorSpec = map[string]bool{
	"profile": true, "installPackagePath": true, "hub": true, "tag": true, "resourceSuffix": true,
	"namespace": true, "revision": true, "compatibilityVersion": true, "meshConfig": true,
	"components": true, "values": true, "unvalidatedValues": true,
}

func checkIstioOperator(obj map[string]interface{}) []string {
	var errs []string
	for key := range obj {
		switch key {
		case "apiVersion", "kind", "metadata", "spec":
		default:
			errs = append(errs, "unknown field "+quote(key))
		}
	}
	if obj["apiVersion"] != "install.istio.io/v1alpha1" {
		errs = append(errs, "apiVersion must be install.istio.io/v1alpha1")
	}
	spec, ok := obj["spec"].(map[string]interface{})
	if !ok {
		return append(errs, "spec: required")
	}
	keys := make([]string, 0, len(spec))
	for key := range spec {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if !istioOperatorSpec[key] {
			errs = append(errs, "unknown field "+quote("spec."+key))
		}
	}
	return append(errs, checkMeshConfig("spec.meshConfig", spec["meshConfig"])...)
}

func checkHelmValues(path string) []string {
	docs, err := readDocs(path)
	if err != nil {
		return []string{err.Error()}
	}
	if len(docs) != 1 {
		return []string{"want exactly one YAML document"}
	}
	if _, ok := docs[0]["meshConfig"]; !ok {
		return []string{"meshConfig: required"}
	}
	return checkMeshConfig("meshConfig", docs[0]["meshConfig"])
}

func checkMeshConfig(path string, value interface{}) []string {
	if value == nil {
		return []string{path + ": required"}
	}
	var mesh meshv1alpha1.MeshConfig
	if errs := strictProto(path, value, &mesh); errs != nil {
		return errs
	}
	// Istio refuses an extension provider without a name, or two with the same name.
	var errs []string
	seen := map[string]bool{}
	for i, provider := range mesh.GetExtensionProviders() {
		switch {
		case provider.GetName() == "":
			errs = append(errs, fmt.Sprintf("%s.extensionProviders[%d].name: required", path, i))
		case seen[provider.GetName()]:
			errs = append(errs, fmt.Sprintf("%s.extensionProviders[%d].name: duplicate %q", path, i, provider.GetName()))
		}
		seen[provider.GetName()] = true
		if grpc := provider.GetEnvoyExtAuthzGrpc(); grpc != nil {
			if grpc.GetService() == "" || grpc.GetPort() == 0 {
				errs = append(errs, fmt.Sprintf("%s.extensionProviders[%d].envoyExtAuthzGrpc: service and port are required", path, i))
			}
		}
	}
	return errs
}
