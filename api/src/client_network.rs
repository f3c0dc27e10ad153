//! Typed client calls for VPCs, subnets and security groups.

use crate::client::{Client, ClientError};
use crate::network::{
    AttachSecurityGroupRequest, CreateSecurityGroupRequest, CreateSubnetRequest, CreateVpcRequest,
    ReplaceRulesRequest, SecurityGroup, Subnet, Vpc,
};
use crate::{Instance, Method};

impl Client {
    async fn delete_no_content(&self, segments: &[&str]) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, self.url(segments)))
            .await
            .map(|_| ())
    }

    // ------------------------------------------------------------------ VPCs

    pub async fn vpc_create(&self, req: &CreateVpcRequest) -> Result<Vpc, ClientError> {
        self.post_json(&["v1", "vpcs"], req).await
    }

    pub async fn vpc_list(&self) -> Result<Vec<Vpc>, ClientError> {
        self.list_all(&["v1", "vpcs"]).await
    }

    /// By id or name.
    pub async fn vpc_get(&self, vpc: &str) -> Result<Vpc, ClientError> {
        self.get_json(&["v1", "vpcs", vpc]).await
    }

    /// Refused (409) while instances are in it; its subnets go with it.
    pub async fn vpc_delete(&self, vpc: &str) -> Result<(), ClientError> {
        self.delete_no_content(&["v1", "vpcs", vpc]).await
    }

    // ------------------------------------------------------------------ subnets

    pub async fn subnet_create(
        &self,
        vpc: &str,
        req: &CreateSubnetRequest,
    ) -> Result<Subnet, ClientError> {
        self.post_json(&["v1", "vpcs", vpc, "subnets"], req).await
    }

    pub async fn subnet_list(&self, vpc: &str) -> Result<Vec<Subnet>, ClientError> {
        self.list_all(&["v1", "vpcs", vpc, "subnets"]).await
    }

    /// Subnet by id or name within the VPC (id or name).
    pub async fn subnet_get(&self, vpc: &str, subnet: &str) -> Result<Subnet, ClientError> {
        self.get_json(&["v1", "vpcs", vpc, "subnets", subnet]).await
    }

    /// Refused (409) while instances are in it.
    pub async fn subnet_delete(&self, vpc: &str, subnet: &str) -> Result<(), ClientError> {
        self.delete_no_content(&["v1", "vpcs", vpc, "subnets", subnet])
            .await
    }

    // ------------------------------------------------------------------ security groups

    pub async fn sg_create(
        &self,
        req: &CreateSecurityGroupRequest,
    ) -> Result<SecurityGroup, ClientError> {
        self.post_json(&["v1", "security-groups"], req).await
    }

    pub async fn sg_list(&self) -> Result<Vec<SecurityGroup>, ClientError> {
        self.list_all(&["v1", "security-groups"]).await
    }

    pub async fn sg_get(&self, group: &str) -> Result<SecurityGroup, ClientError> {
        self.get_json(&["v1", "security-groups", group]).await
    }

    /// Replaces every rule of the group at once; instances get the new rules atomically.
    pub async fn sg_replace_rules(
        &self,
        group: &str,
        req: &ReplaceRulesRequest,
    ) -> Result<SecurityGroup, ClientError> {
        self.json(
            self.request(
                Method::PUT,
                self.url(&["v1", "security-groups", group, "rules"]),
            )
            .json(req),
        )
        .await
    }

    /// Refused (409) while instances use it or other groups' rules name it.
    pub async fn sg_delete(&self, group: &str) -> Result<(), ClientError> {
        self.delete_no_content(&["v1", "security-groups", group])
            .await
    }

    /// Adds a security group to an instance's port (idempotent).
    pub async fn instance_sg_attach(
        &self,
        instance: &str,
        group: &str,
    ) -> Result<Instance, ClientError> {
        self.post_json(
            &["v1", "instances", instance, "security-groups"],
            &AttachSecurityGroupRequest {
                security_group: group.to_owned(),
            },
        )
        .await
    }

    /// Removes a security group from an instance's port (idempotent).
    pub async fn instance_sg_detach(
        &self,
        instance: &str,
        group: &str,
    ) -> Result<Instance, ClientError> {
        self.json(self.request(
            Method::DELETE,
            self.url(&["v1", "instances", instance, "security-groups", group]),
        ))
        .await
    }
}
